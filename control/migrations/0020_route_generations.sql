-- Route generations (#16, the race on #4): every route update control sends the proxy (a
-- deploy's switch, the domain verifier's push, a teardown's removal) carries a number from this
-- sequence, taken before the route is read from the store; the proxy refuses one older than what
-- it holds, so a slow push never overwrites a newer one.
CREATE SEQUENCE IF NOT EXISTS route_generations;
