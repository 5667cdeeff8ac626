//! Databases of a test's own: a PostgreSQL database ([`PostgresDb`], feature `postgres`) and a
//! ClickHouse database ([`ClickHouseDb`], feature `clickhouse`), each created under a unique
//! name and dropped when the guard goes, also when the test fails (the drop runs on a thread
//! of its own, so it works inside a test's runtime and outside one).

#[cfg(feature = "clickhouse")]
mod ch;
#[cfg(feature = "postgres")]
mod pg;

#[cfg(feature = "clickhouse")]
pub use ch::ClickHouseDb;
#[cfg(feature = "postgres")]
pub use pg::PostgresDb;
