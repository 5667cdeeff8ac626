use super::*;

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

#[test]
fn a_service_with_volumes_goes_to_the_node_holding_them_or_nowhere() {
    let nodes = [
        compute(1, (4000, 0), (8 << 30, 0), 0),
        compute(2, (4000, 4000), (8 << 30, 8 << 30), 1),
    ];
    assert_eq!(place_container(&nodes, 500, 1 << 30, None), Some(id(1)));
    // Full, but the old container's share frees before the new one starts.
    assert_eq!(
        place_container(&nodes, 500, 1 << 30, Some(id(2))),
        Some(id(2))
    );
    let mut down = nodes.clone();
    down[1].up = false;
    assert_eq!(place_container(&down, 500, 1 << 30, Some(id(2))), None);
    assert_eq!(place_container(&nodes, 500, 1 << 30, Some(id(9))), None);
}

fn build(n: u128, running: u32, repo_builds: u32, last: Option<i64>) -> BuildNodeView {
    BuildNodeView {
        id: id(n),
        up: true,
        slots: 4,
        builds_running: running,
        repo_builds,
        repo_last_built: last.map(|s| DateTime::from_timestamp(s, 0).unwrap()),
    }
}

#[test]
fn build_goes_to_the_warm_node_with_a_free_slot() {
    let nodes = [
        build(1, 0, 0, None),
        build(2, 3, 5, Some(100)),
        build(3, 1, 0, None),
    ];
    assert_eq!(
        pick_build_node(&nodes),
        Some(id(2)),
        "warm cache wins over idleness"
    );
}

#[test]
fn a_full_node_gets_no_build_even_when_warm() {
    let nodes = [build(1, 2, 0, None), build(2, 4, 9, Some(100))];
    assert_eq!(pick_build_node(&nodes), Some(id(1)));
    let full = [build(1, 4, 0, None), build(2, 4, 1, Some(1))];
    assert_eq!(pick_build_node(&full), None);
}

#[test]
fn slots_are_capped_at_four() {
    let mut n = build(1, 4, 0, None);
    n.slots = 16;
    assert_eq!(pick_build_node(&[n]), None);
}

#[test]
fn cold_nodes_share_by_load_and_most_recent_warmth_wins() {
    let nodes = [build(1, 2, 0, None), build(2, 1, 0, None)];
    assert_eq!(pick_build_node(&nodes), Some(id(2)));
    let warm = [build(1, 0, 3, Some(50)), build(2, 0, 1, Some(90))];
    assert_eq!(pick_build_node(&warm), Some(id(2)));
}

#[test]
fn down_nodes_are_never_picked() {
    let mut n = build(1, 0, 5, Some(1));
    n.up = false;
    assert_eq!(pick_build_node(&[n]), None);
}

fn compute(n: u128, cpu: (u64, u64), mem: (u64, u64), replicas: u32) -> ComputeNodeView {
    ComputeNodeView {
        id: id(n),
        up: true,
        cpu_millis_total: cpu.0,
        cpu_millis_allocated: cpu.1,
        memory_bytes_total: mem.0,
        memory_bytes_allocated: mem.1,
        replicas_of_service: replicas,
        outgoing_cpu_millis: 0,
        outgoing_memory_bytes: 0,
    }
}

#[test]
fn container_goes_where_it_fits() {
    let nodes = [
        compute(1, (2000, 1900), (1 << 30, 0), 0),
        compute(2, (2000, 500), (1 << 30, 0), 0),
    ];
    assert_eq!(pick_compute_node(&nodes, 500, 1 << 20), Some(id(2)));
    assert_eq!(pick_compute_node(&nodes, 1600, 1 << 20), None);
    let mem_full = [compute(1, (0, 0), (1000, 900), 0)];
    assert_eq!(pick_compute_node(&mem_full, 0, 200), None);
    assert_eq!(pick_compute_node(&mem_full, 0, 100), Some(id(1)));
}

#[test]
fn replicas_spread_before_packing() {
    let nodes = [
        compute(1, (4000, 0), (0, 0), 1),
        compute(2, (4000, 3000), (0, 0), 0),
    ];
    assert_eq!(pick_compute_node(&nodes, 100, 0), Some(id(2)));
}

#[test]
fn emptiest_node_wins_a_tie_on_replicas() {
    let nodes = [
        compute(1, (4000, 2000), (0, 0), 0),
        compute(2, (4000, 1000), (0, 0), 0),
    ];
    assert_eq!(pick_compute_node(&nodes, 100, 0), Some(id(2)));
    let mut down = compute(3, (4000, 0), (0, 0), 0);
    down.up = false;
    assert_eq!(pick_compute_node(&[down], 1, 1), None);
}

fn none() -> Vec<Uuid> {
    vec![]
}

fn probed(n: u128, probe: Probe) -> Probed {
    Probed {
        id: id(n),
        up: true,
        probe,
    }
}

/// Rounds one second apart from `t0`: each `rounds` entry is one round's probes and whether it
/// stalled; returns what each round marked down.
fn rounds(watch: &mut NodeWatch, t0: Instant, rounds: &[(&[Probed], bool)]) -> Vec<Vec<Uuid>> {
    rounds
        .iter()
        .enumerate()
        .map(|(i, (probes, stalled))| {
            watch.round(t0 + Duration::from_secs(i as u64), probes, *stalled)
        })
        .collect()
}

#[test]
fn a_dead_node_is_marked_down_after_down_after_and_two_failed_probes() {
    let mut watch = NodeWatch::new(Duration::from_secs(3));
    let t0 = Instant::now();
    let (ok, dead) = (probed(1, Probe::Answered), probed(2, Probe::Silent));
    let alive = [ok, probed(2, Probe::Answered)];
    let marked = rounds(
        &mut watch,
        t0,
        &[
            (&alive, false),
            (&[ok, dead], false),
            (&[ok, dead], false),
            (&[ok, dead], false),
            (&[ok, dead], false),
        ],
    );
    // Last answer at 0 s: silent at 1, 2 and 3 s; down at 3 s (3 s without an answer).
    assert_eq!(marked, [none(), none(), none(), vec![id(2)], vec![id(2)]]);
    // Already down in the store: not marked again; an answer starts it afresh.
    let down = Probed { up: false, ..dead };
    assert_eq!(
        watch.round(t0 + Duration::from_secs(5), &[ok, down], false),
        none()
    );
    let t = t0 + Duration::from_secs(6);
    assert_eq!(watch.round(t, &alive, false), none());
    assert_eq!(
        watch.round(t + Duration::from_secs(4), &[ok, dead], false),
        none(),
        "one failed probe is not enough, however long the silence"
    );
}

#[test]
fn lateness_alone_never_marks_a_node_down() {
    let t0 = Instant::now();
    let ok = probed(1, Probe::Answered);
    let mut watch = NodeWatch::new(Duration::from_secs(3));
    // Answers 10 s apart (the monitor itself was slow): never down.
    for i in 0..4 {
        let at = t0 + Duration::from_secs(10 * i);
        assert_eq!(
            watch.round(at, &[ok, probed(2, Probe::Answered)], false),
            none()
        );
    }
}

#[test]
fn every_node_failing_at_once_marks_none_down() {
    // No witness: control's own network or process is the likelier fault.
    let mut watch = NodeWatch::new(Duration::from_secs(2));
    let t0 = Instant::now();
    let all = [
        probed(1, Probe::Silent),
        probed(2, Probe::Silent),
        probed(3, Probe::Refused),
    ];
    let marked = rounds(&mut watch, t0, &[(&all[..], false); 6]);
    assert!(marked.iter().all(Vec::is_empty), "{marked:?}");
    // Once one answers, the others' failures (counted meanwhile) are believed.
    let witnessed = [
        probed(1, Probe::Answered),
        probed(2, Probe::Silent),
        probed(3, Probe::Refused),
    ];
    assert_eq!(
        watch.round(t0 + Duration::from_secs(6), &witnessed, false),
        vec![id(2), id(3)]
    );
}

#[test]
fn a_lone_node_is_believed_on_a_refused_connection_only() {
    let t0 = Instant::now();
    let mut silent = NodeWatch::new(Duration::from_secs(2));
    let marked = rounds(
        &mut silent,
        t0,
        &[(&[probed(1, Probe::Silent)][..], false); 5],
    );
    assert!(marked.iter().all(Vec::is_empty), "{marked:?}");
    let mut refused = NodeWatch::new(Duration::from_secs(2));
    let marked = rounds(
        &mut refused,
        t0,
        &[(&[probed(1, Probe::Refused)][..], false); 3],
    );
    assert_eq!(marked, [none(), none(), vec![id(1)]]);
}

#[test]
fn stalled_rounds_count_nothing_and_decide_nothing() {
    let mut watch = NodeWatch::new(Duration::from_secs(2));
    let t0 = Instant::now();
    let (ok, dead) = (probed(1, Probe::Answered), probed(2, Probe::Silent));
    let marked = rounds(
        &mut watch,
        t0,
        &[
            (&[ok, probed(2, Probe::Answered)], false),
            (&[ok, dead], true),
            (&[ok, dead], true),
            (&[ok, dead], true),
            // 4 s of silence but one conclusive failure so far.
            (&[ok, dead], false),
            (&[ok, dead], false),
        ],
    );
    assert_eq!(
        marked,
        [none(), none(), none(), none(), none(), vec![id(2)]]
    );
    assert!(!stalled(MONITOR_STALL_TOLERANCE));
    assert!(stalled(MONITOR_STALL_TOLERANCE + Duration::from_millis(1)));
}

#[test]
fn a_probe_waits_half_of_down_after_within_bounds() {
    assert_eq!(
        probe_timeout(Duration::from_secs(5)),
        Duration::from_millis(2500)
    );
    assert_eq!(
        probe_timeout(Duration::from_millis(600)),
        Duration::from_millis(500)
    );
    assert_eq!(
        probe_timeout(Duration::from_secs(60)),
        Duration::from_millis(2500)
    );
}

#[test]
fn a_node_no_longer_probed_is_forgotten() {
    let mut watch = NodeWatch::new(Duration::from_secs(1));
    let t0 = Instant::now();
    let (ok, dead) = (probed(1, Probe::Answered), probed(2, Probe::Refused));
    rounds(
        &mut watch,
        t0,
        &[(&[ok, dead], false), (&[ok, dead], false)],
    );
    watch.round(t0 + Duration::from_secs(2), &[ok], false);
    // Registered again (or a new monitor): counted from its first probe.
    assert_eq!(
        watch.round(t0 + Duration::from_secs(3), &[ok, dead], false),
        none()
    );
}

#[test]
fn replicas_spread_over_distinct_nodes_first_then_the_emptiest() {
    let nodes = [
        compute(1, (4000, 0), (8 << 30, 0), 0),
        compute(2, (4000, 1000), (8 << 30, 0), 0),
    ];
    // 3 on 2 nodes: one each, the third on the emptier (node 1 took 500 of 4000, node 2 has
    // 1500 taken).
    assert_eq!(
        place_replicas(&nodes, &[], 3, 500, 1 << 20),
        Ok(vec![id(1), id(2), id(1)])
    );
    // The set being replaced does not count: its containers go after the switch.
    let mut busy = nodes.clone();
    busy[0].replicas_of_service = 5;
    assert_eq!(
        place_replicas(&busy, &[], 2, 500, 1 << 20),
        Ok(vec![id(1), id(2)])
    );
    // One node: all there.
    assert_eq!(
        place_replicas(&nodes[1..], &[], 3, 500, 1 << 20),
        Ok(vec![id(2), id(2), id(2)])
    );
    // A down node gets none.
    let mut down = nodes.clone();
    down[0].up = false;
    assert_eq!(
        place_replicas(&down, &[], 2, 500, 1 << 20),
        Ok(vec![id(2), id(2)])
    );
}

#[test]
fn resumed_placements_are_kept_and_a_replica_without_room_is_named() {
    let nodes = [
        compute(1, (4000, 0), (8 << 30, 0), 0),
        compute(2, (4000, 0), (8 << 30, 0), 0),
    ];
    // Replica 0 was placed on node 2 before a crash: kept, the next goes to node 1.
    assert_eq!(
        place_replicas(&nodes, &[id(2)], 2, 500, 0),
        Ok(vec![id(2), id(1)])
    );
    // Room for two 1500-millicore replicas per node: the fifth finds none.
    assert_eq!(place_replicas(&nodes, &[], 5, 1500, 0), Err(4));
    assert_eq!(
        place_replicas(&nodes, &[], 4, 1500, 0).map(|p| p.len()),
        Ok(4)
    );
}

#[test]
fn the_set_being_replaced_takes_no_room_from_its_successor() {
    // Two 4000-millicore nodes, each running one 2000-millicore replica of the service; node 1
    // is lost. The survivor needs room for the set (two replicas), not for it beside the one
    // still serving there.
    let mut nodes = [
        compute(1, (4000, 2000), (8 << 30, 1 << 30), 1),
        compute(2, (4000, 2000), (8 << 30, 1 << 30), 1),
    ];
    for n in &mut nodes {
        n.outgoing_cpu_millis = 2000;
        n.outgoing_memory_bytes = 1 << 30;
    }
    nodes[0].up = false;
    assert_eq!(
        place_replicas(&nodes, &[], 2, 2000, 1 << 30),
        Ok(vec![id(2), id(2)])
    );
    // Counted as before, the second replica would find no room.
    let mut counted = nodes.clone();
    counted[1].outgoing_cpu_millis = 0;
    assert_eq!(place_replicas(&counted, &[], 2, 2000, 1 << 30), Err(1));
    // The set itself still needs room: three replicas do not fit on one node.
    assert_eq!(place_replicas(&nodes, &[], 3, 2000, 1 << 30), Err(2));
    // Other services' shares still count: node 2 also runs 1500 of another service.
    let mut shared = nodes.clone();
    shared[1].cpu_millis_allocated += 1500;
    assert_eq!(place_replicas(&shared, &[], 2, 2000, 1 << 30), Err(1));
    assert_eq!(
        place_replicas(&shared, &[], 1, 2000, 1 << 30),
        Ok(vec![id(2)])
    );
}

#[test]
fn no_room_names_the_share_and_the_replica() {
    assert_eq!(
        no_room(3000, 0, 1, 2),
        "no compute node is up with room for 3000 cpu millis and 0 bytes of memory (replica 2 of 2)"
    );
    assert!(no_room(1, 2, 0, 1).starts_with(NO_ROOM));
    assert!(!no_room(1, 2, 0, 1).contains("replica"));
}
