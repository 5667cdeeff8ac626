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

#[test]
fn silent_nodes_are_marked_down() {
    let t = |s| DateTime::from_timestamp(s, 0).unwrap();
    let nodes = [
        HeartbeatView {
            id: id(1),
            up: true,
            last_heartbeat: Some(t(95)),
            registered_at: t(0),
        },
        HeartbeatView {
            id: id(2),
            up: true,
            last_heartbeat: Some(t(80)),
            registered_at: t(0),
        },
        HeartbeatView {
            id: id(3),
            up: true,
            last_heartbeat: None,
            registered_at: t(99),
        },
        HeartbeatView {
            id: id(4),
            up: true,
            last_heartbeat: None,
            registered_at: t(50),
        },
        HeartbeatView {
            id: id(5),
            up: false,
            last_heartbeat: Some(t(0)),
            registered_at: t(0),
        },
    ];
    assert_eq!(
        nodes_to_mark_down(&nodes, t(100), Duration::from_secs(10)),
        vec![id(2), id(4)]
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
