//! Replicas (#15) on a real PostgreSQL with recording fakes of the daemons: a deployment's
//! instances spread over the compute nodes and switched as one set; a scale (PATCH replicas)
//! deploys the serving image again without a build; rollback keeps the current count; the old
//! set and a deleted service are removed from every node; a lost node's replicas are placed
//! again on the nodes up (a service with a volume there is shown down with it) and its
//! orphans removed when it answers again.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::fakes::{Call, Fakes};
use common::{Harness, fake_clients};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(20);

fn nodes_of(d: &Value) -> Vec<String> {
    d["instances"]
        .as_array()
        .unwrap_or_else(|| panic!("a deployment lists its instances: {d}"))
        .iter()
        .map(|i| i["node_id"].as_str().unwrap().to_owned())
        .collect()
}

fn removed(fakes: &Fakes, deployment: &str) -> BTreeSet<String> {
    fakes
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Remove {
                node,
                deployment: d,
            } if d == deployment => Some(node),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn replicas_spread_switch_as_one_set_scale_without_a_build_and_go_from_every_node()
-> anyhow::Result<()> {
    let fakes = Fakes::new();
    let h = Harness::start(fake_clients(&fakes)).await?;
    let n1 = h.register_node("n1", "compute", "http://127.0.0.1:9").await;
    let n2 = h
        .register_node("n2", "compute", "http://127.0.0.1:10")
        .await;
    let (_, a) = h.org("org-a").await;
    let (_, service) = h
        .service(
            &a,
            json!({ "name": "web", "image": "app:v1", "port": 8080, "replicas": 3 }),
        )
        .await;

    let d1 = h.deploy(&a, &service, json!({})).await;
    let v1 = h.wait_terminal(&a, &d1, LIMIT).await;
    assert_eq!(v1["state"], "ready", "{v1}");
    let placed = nodes_of(&v1);
    assert_eq!(placed.len(), 3, "{v1}");
    assert_eq!(
        placed.iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([&n1, &n2]),
        "3 replicas over both nodes: {v1}"
    );
    let switches: Vec<String> = fakes
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Switch {
                deployment,
                address,
                ..
            } if deployment == d1 => Some(address),
            _ => None,
        })
        .collect();
    assert_eq!(
        switches,
        ["10.0.0.1:8080,10.0.1.1:8080,10.0.2.1:8080"],
        "one switch with the whole set"
    );

    // Scale to 1: the serving image again, no build; the old set goes from both nodes.
    let (status, s) = h
        .call(
            "PATCH",
            &format!("/services/{service}"),
            &a,
            Some(json!({ "replicas": 1 })),
        )
        .await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["replicas"], 1);
    let d2 = s["deployment"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("a scale queues a deployment: {s}"))
        .to_owned();
    let v2 = h.wait_terminal(&a, &d2, LIMIT).await;
    assert_eq!(v2["state"], "ready", "{v2}");
    assert_eq!(nodes_of(&v2).len(), 1);
    assert_eq!(v2["image"], v1["image"]);
    assert!(
        v2["build_node_id"].is_null() && v2["git_ref"].is_null(),
        "{v2}"
    );
    assert_eq!(
        removed(&fakes, &d1),
        BTreeSet::from(["http://127.0.0.1:9".into(), "http://127.0.0.1:10".into()])
    );
    // The same count again: nothing to deploy.
    let (status, s) = h
        .call(
            "PATCH",
            &format!("/services/{service}"),
            &a,
            Some(json!({ "replicas": 1 })),
        )
        .await;
    assert_eq!(status, 200, "{s}");
    assert!(s["deployment"].is_null(), "{s}");

    // A rollback to the 3-replica deployment runs the service's current count: 1.
    let (status, r) = h
        .call("POST", &format!("/deployments/{d1}/rollback"), &a, None)
        .await;
    assert_eq!(status, 201, "{r}");
    let d3 = r["id"].as_str().unwrap().to_owned();
    let v3 = h.wait_terminal(&a, &d3, LIMIT).await;
    assert_eq!(v3["state"], "ready", "{v3}");
    assert_eq!(nodes_of(&v3).len(), 1, "{v3}");

    // Back to 2, then delete: every node of the serving set is asked to remove it.
    let (_, s) = h
        .call(
            "PATCH",
            &format!("/services/{service}"),
            &a,
            Some(json!({ "replicas": 2 })),
        )
        .await;
    let d4 = s["deployment"]["id"].as_str().unwrap().to_owned();
    let v4 = h.wait_terminal(&a, &d4, LIMIT).await;
    assert_eq!(v4["state"], "ready", "{v4}");
    assert_eq!(
        nodes_of(&v4).iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([&n1, &n2])
    );
    let (status, _) = h
        .call("DELETE", &format!("/services/{service}"), &a, None)
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        removed(&fakes, &d4),
        BTreeSet::from(["http://127.0.0.1:9".into(), "http://127.0.0.1:10".into()])
    );
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_service_with_volumes_keeps_one_replica() -> anyhow::Result<()> {
    let fakes = Fakes::new();
    let h = Harness::start(fake_clients(&fakes)).await?;
    let (_, a) = h.org("org-a").await;
    let volume = json!([{ "name": "data", "mount_path": "/data", "size_bytes": 1u64 << 30 }]);
    let (_, p) = h
        .call("POST", "/projects", &a, Some(json!({ "name": "vols" })))
        .await;
    let project = p["id"].as_str().unwrap();
    let (status, e) = h
        .call(
            "POST",
            &format!("/projects/{project}/services"),
            &a,
            Some(json!({ "name": "db", "image": "app:v1", "replicas": 2, "volumes": volume })),
        )
        .await;
    assert_eq!(status, 422, "{e}");
    assert!(e.to_string().contains("replicas"), "{e}");
    let (_, service) = h
        .service(
            &a,
            json!({ "name": "db", "image": "app:v1", "volumes": volume }),
        )
        .await;
    let (status, e) = h
        .call(
            "PATCH",
            &format!("/services/{service}"),
            &a,
            Some(json!({ "replicas": 3 })),
        )
        .await;
    assert_eq!(status, 422, "{e}");
    assert!(
        e.to_string()
            .contains("a service with volumes runs one replica"),
        "{e}"
    );
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_lost_node_s_replicas_are_placed_again_and_its_orphans_go_when_it_answers_again()
-> anyhow::Result<()> {
    let fakes = Fakes::new();
    let db = common::database().await?;
    let mut config = common::config(&db);
    config.node_down_after_ms = 600;
    let h = Harness::start_with(db, &config, fake_clients(&fakes)).await?;
    let n1 = h.register_node("n1", "compute", "http://127.0.0.1:9").await;
    let n2 = h
        .register_node("n2", "compute", "http://127.0.0.1:10")
        .await;
    let address = |id: &str| {
        if id == n1 {
            "http://127.0.0.1:9"
        } else {
            "http://127.0.0.1:10"
        }
    };
    let (_, a) = h.org("org-a").await;
    // A service with a volume: the node holding it is the one lost.
    let volume = json!([{ "name": "data", "mount_path": "/data", "size_bytes": 1u64 << 30 }]);
    let (_, stateful) = h
        .service(
            &a,
            json!({ "name": "db", "image": "app:v1", "volumes": volume }),
        )
        .await;
    let d = h.deploy(&a, &stateful, json!({})).await;
    let v = h.wait_terminal(&a, &d, LIMIT).await;
    assert_eq!(v["state"], "ready", "{v}");
    let lost_id = nodes_of(&v)[0].clone();
    let kept = if lost_id == n1 {
        n2.clone()
    } else {
        n1.clone()
    };
    let (lost_address, lost_name) = (address(&lost_id), if lost_id == n1 { "n1" } else { "n2" });
    let (_, service) = h
        .service(
            &a,
            json!({ "name": "web", "image": "app:v1", "port": 8080, "replicas": 2 }),
        )
        .await;
    let d1 = h.deploy(&a, &service, json!({})).await;
    let v1 = h.wait_terminal(&a, &d1, LIMIT).await;
    assert_eq!(
        nodes_of(&v1).iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([&n1, &n2])
    );
    let (_, s) = h
        .call("GET", &format!("/services/{stateful}"), &a, None)
        .await;
    assert_eq!(s["down_with_node"], Value::Null, "{s}");

    // The node stops answering: marked down after 600 ms, web's replica there placed again on
    // the other node; db (its volume lives there) is shown down with it, not moved.
    fakes.node.silent.lock().unwrap().push(lost_address.into());
    let lost = tokio::time::Instant::now();
    let replaced = loop {
        let (_, s) = h
            .call("GET", &format!("/services/{service}"), &a, None)
            .await;
        let current = s["current_deployment_id"].as_str().unwrap_or_default();
        if current != d1 {
            break current.to_owned();
        }
        assert!(
            lost.elapsed() < LIMIT,
            "the lost replica was never placed again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let v2 = h.wait_terminal(&a, &replaced, LIMIT).await;
    assert_eq!(v2["state"], "ready", "{v2}");
    assert_eq!(nodes_of(&v2), [kept.clone(), kept.clone()], "{v2}");
    assert_eq!(v2["image"], v1["image"]);
    eprintln!(
        "replicas serving again on {kept} {:?} after {lost_name} went silent",
        lost.elapsed()
    );
    let (_, nodes) = h.call("GET", "/nodes", common::ADMIN, None).await;
    assert!(
        nodes.to_string().contains("\"down\""),
        "{lost_name} is shown down: {nodes}"
    );
    let (_, s) = h
        .call("GET", &format!("/services/{stateful}"), &a, None)
        .await;
    assert_eq!(
        s["down_with_node"],
        json!({ "id": lost_id, "name": lost_name }),
        "{s}"
    );
    assert_eq!(s["current_deployment_id"], v["id"], "db is not moved: {s}");
    let (_, listed) = h
        .call(
            "GET",
            &format!("/projects/{}/services", s["project_id"].as_str().unwrap()),
            &a,
            None,
        )
        .await;
    assert!(
        listed
            .to_string()
            .contains(&format!("\"down_with_node\":{{\"id\":\"{lost_id}\"")),
        "the list shows it too: {listed}"
    );

    // The old set's removal could not reach the lost node; once it answers again, the replica
    // of d1 it still runs is removed, and db is no longer down.
    assert!(!removed(&fakes, &d1).contains(lost_address));
    fakes.node.silent.lock().unwrap().clear();
    let back = tokio::time::Instant::now();
    while !removed(&fakes, &d1).contains(lost_address) {
        assert!(
            back.elapsed() < LIMIT,
            "the returned node's orphan was never removed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, s) = h
        .call("GET", &format!("/services/{stateful}"), &a, None)
        .await;
    assert_eq!(s["down_with_node"], Value::Null, "{s}");
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn draining_a_node_moves_its_stateless_replicas_and_lists_those_with_volumes()
-> anyhow::Result<()> {
    let fakes = Fakes::new();
    let h = Harness::start(fake_clients(&fakes)).await?;
    let n1 = h.register_node("n1", "compute", "http://127.0.0.1:9").await;
    let n2 = h
        .register_node("n2", "compute", "http://127.0.0.1:10")
        .await;
    let address = |id: &str| {
        if id == n1 {
            "http://127.0.0.1:9"
        } else {
            "http://127.0.0.1:10"
        }
    };
    let (_, a) = h.org("org-a").await;
    let volume = json!([{ "name": "data", "mount_path": "/data", "size_bytes": 1u64 << 30 }]);
    let (_, db) = h
        .service(
            &a,
            json!({ "name": "db", "image": "app:v1", "volumes": volume }),
        )
        .await;
    let d_db = h.deploy(&a, &db, json!({})).await;
    let v_db = h.wait_terminal(&a, &d_db, LIMIT).await;
    assert_eq!(v_db["state"], "ready", "{v_db}");
    let (_, web) = h
        .service(
            &a,
            json!({ "name": "web", "image": "app:v1", "port": 8080, "replicas": 2 }),
        )
        .await;
    let d1 = h.deploy(&a, &web, json!({})).await;
    let v1 = h.wait_terminal(&a, &d1, LIMIT).await;
    assert_eq!(
        nodes_of(&v1).iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([&n1, &n2])
    );

    // The node of the service with a volume is drained: web moves, db stays (listed).
    let drained = nodes_of(&v_db)[0].clone();
    let other = if drained == n1 { &n2 } else { &n1 };
    let (status, answer) = h
        .call(
            "POST",
            &format!("/nodes/{drained}/drain"),
            common::ADMIN,
            None,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["moving"][0]["service_id"], web.as_str(), "{answer}");
    assert_eq!(
        answer["moving"].as_array().map(Vec::len),
        Some(1),
        "{answer}"
    );
    assert_eq!(answer["staying"][0]["service_id"], db.as_str(), "{answer}");
    let moved = answer["moving"][0]["deployment_id"]
        .as_str()
        .unwrap_or_else(|| panic!("a deployment moves web: {answer}"))
        .to_owned();
    let v2 = h.wait_terminal(&a, &moved, LIMIT).await;
    assert_eq!(v2["state"], "ready", "{v2}");
    assert_eq!(nodes_of(&v2), [other.clone(), other.clone()], "{v2}");
    assert_eq!(v2["image"], v1["image"], "moved without a build");
    // The old set goes from both nodes, the drained one included; db still serves there.
    let gone = tokio::time::Instant::now();
    while removed(&fakes, &d1) != BTreeSet::from([address(&n1).into(), address(&n2).into()]) {
        assert!(gone.elapsed() < LIMIT, "the old set was not removed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(removed(&fakes, &d_db).is_empty());
    let (_, s) = h.call("GET", &format!("/services/{db}"), &a, None).await;
    assert_eq!(s["current_deployment_id"], d_db.as_str(), "{s}");
    h.stop().await;
    Ok(())
}

/// The service's JSON once `done` holds for it (the monitor's rounds run every 200 ms).
async fn service_when(
    h: &common::Harness,
    token: &str,
    service: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = tokio::time::Instant::now();
    loop {
        let (_, s) = h
            .call("GET", &format!("/services/{service}"), token, None)
            .await;
        if done(&s) {
            return s;
        }
        assert!(started.elapsed() < LIMIT, "{what}: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct TwoNodes {
    fakes: Fakes,
    h: Harness,
    a: String,
    web: String,
    d1: String,
    v1: serde_json::Value,
    n1: String,
    n2: String,
}

/// A control with two compute nodes of 4000 cpu millis (n1, n2) and `web` of org-a serving two
/// replicas of `cpu_millis` each, one on each node (deployment `d1`, as `v1`).
async fn two_replicas_on_two_nodes(cpu_millis: u32) -> anyhow::Result<TwoNodes> {
    let fakes = Fakes::new();
    let db = common::database().await?;
    let mut config = common::config(&db);
    config.node_down_after_ms = 600;
    let h = Harness::start_with(db, &config, fake_clients(&fakes)).await?;
    let n1 = h.register_node("n1", "compute", "http://127.0.0.1:9").await;
    let n2 = h
        .register_node("n2", "compute", "http://127.0.0.1:10")
        .await;
    let (_, a) = h.org("org-a").await;
    let (_, web) = h
        .service(
            &a,
            json!({ "name": "web", "image": "app:v1", "port": 8080, "replicas": 2,
                    "resources": { "cpu_millis": cpu_millis } }),
        )
        .await;
    let d1 = h.deploy(&a, &web, json!({})).await;
    let v1 = h.wait_terminal(&a, &d1, LIMIT).await;
    assert_eq!(v1["state"], "ready", "{v1}");
    assert_eq!(
        nodes_of(&v1).iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([&n1, &n2])
    );
    Ok(TwoNodes {
        fakes,
        h,
        a,
        web,
        d1,
        v1,
        n1,
        n2,
    })
}

#[tokio::test]
async fn a_set_without_room_waits_for_it_and_is_placed_once_a_node_joins() -> anyhow::Result<()> {
    // Two nodes of 4000 cpu millis; two replicas of 3000: one on each, and one node cannot
    // hold the set.
    let TwoNodes {
        fakes,
        h,
        a,
        web,
        d1,
        v1,
        n1,
        n2,
    } = two_replicas_on_two_nodes(3000).await?;
    let deployments = || async {
        let (_, list) = h
            .call("GET", &format!("/services/{web}/deployments"), &a, None)
            .await;
        list["items"].as_array().map(Vec::len).unwrap_or_default()
    };

    // n1 is lost: no room on n2 for the set, so no deployment is queued to fail; the service
    // waits for room (shown, with an event) and keeps serving on n2 meanwhile.
    fakes
        .node
        .silent
        .lock()
        .unwrap()
        .push("http://127.0.0.1:9".into());
    let s = service_when(&h, &a, &web, "the lost set never waited for room", |s| {
        !s["waiting_for_room"].is_null()
    })
    .await;
    assert_eq!(s["waiting_for_room"]["cause"], "lost", "{s}");
    assert_eq!(s["waiting_for_room"]["node_id"], n1.as_str(), "{s}");
    assert!(
        s["waiting_for_room"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no compute node is up with room for 3000 cpu millis")),
        "{s}"
    );
    assert_eq!(s["scheduling_events"][0]["step"], "waiting_for_room", "{s}");
    assert_eq!(s["current_deployment_id"], d1.as_str(), "{s}");
    // Rounds go by: still one deployment, still one event.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(deployments().await, 1);
    let (_, s) = h.call("GET", &format!("/services/{web}"), &a, None).await;
    assert_eq!(
        s["scheduling_events"].as_array().map(Vec::len),
        Some(1),
        "{s}"
    );

    // n1 answers again: its replica serves again, nothing to move, the wait ends.
    fakes.node.silent.lock().unwrap().clear();
    let s = service_when(&h, &a, &web, "the wait never ended", |s| {
        s["waiting_for_room"].is_null()
    })
    .await;
    assert_eq!(s["scheduling_events"][0]["step"], "room_wait_ended", "{s}");
    assert_eq!(s["current_deployment_id"], d1.as_str(), "{s}");
    assert_eq!(deployments().await, 1);

    // n1 is drained: still no room on n2, so web keeps serving on n1 and waits.
    let (status, answer) = h
        .call("POST", &format!("/nodes/{n1}/drain"), common::ADMIN, None)
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["waiting"][0]["service_id"], web.as_str(), "{answer}");
    assert_eq!(answer["moving"], json!([]), "{answer}");
    let (_, s) = h.call("GET", &format!("/services/{web}"), &a, None).await;
    assert_eq!(s["waiting_for_room"]["cause"], "drained", "{s}");

    // A node joins: the monitor places the set on n2 and n3, and the wait ends.
    let n3 = h
        .register_node("n3", "compute", "http://127.0.0.1:11")
        .await;
    let s = service_when(
        &h,
        &a,
        &web,
        "the set was never placed once room freed",
        |s| s["current_deployment_id"] != d1.as_str(),
    )
    .await;
    let moved = s["current_deployment_id"].as_str().unwrap().to_owned();
    let v2 = h.wait_terminal(&a, &moved, LIMIT).await;
    assert_eq!(v2["state"], "ready", "{v2}");
    assert_eq!(
        nodes_of(&v2).iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([&n2, &n3]),
        "{v2}"
    );
    assert_eq!(v2["image"], v1["image"], "moved without a build");
    let (_, s) = h.call("GET", &format!("/services/{web}"), &a, None).await;
    assert!(s["waiting_for_room"].is_null(), "{s}");
    assert_eq!(s["scheduling_events"][0]["step"], "placed_again", "{s}");
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_lost_node_s_replicas_need_room_for_the_set_only_not_beside_the_survivors()
-> anyhow::Result<()> {
    // Two replicas of 2000 on two nodes of 4000: n2 holds the set alone, but not the set beside
    // the replica serving there (6000).
    let TwoNodes {
        fakes,
        h,
        a,
        web,
        d1,
        n2,
        ..
    } = two_replicas_on_two_nodes(2000).await?;
    fakes
        .node
        .silent
        .lock()
        .unwrap()
        .push("http://127.0.0.1:9".into());
    let s = service_when(
        &h,
        &a,
        &web,
        "the lost replica was never placed again",
        |s| s["current_deployment_id"] != d1.as_str(),
    )
    .await;
    assert!(s["waiting_for_room"].is_null(), "{s}");
    let moved = s["current_deployment_id"].as_str().unwrap().to_owned();
    let v2 = h.wait_terminal(&a, &moved, LIMIT).await;
    assert_eq!(v2["state"], "ready", "{v2}");
    assert_eq!(nodes_of(&v2), [n2.clone(), n2.clone()], "{v2}");
    h.stop().await;
    Ok(())
}
