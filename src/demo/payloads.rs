//! Deterministic JSON payloads imitating the legacy API's responses (sizes roughly as in
//! production: diagram ~10 KB, metadata ~2 KB, bundle ~5 KB, event context ~1 KB).

use serde_json::{json, Value};

const STATES: [&str; 12] = [
    "created",
    "intake",
    "matching",
    "matched",
    "scheduling",
    "scheduled",
    "in_session",
    "follow_up",
    "review",
    "completed",
    "cancelled",
    "archived",
];

/// `GET /api/state-machine/diagram`: states, transitions and a mermaid rendering (~10 KB).
pub fn diagram() -> Value {
    let states: Vec<Value> = STATES
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({
                "id": s,
                "index": i,
                "label": format!("{} state", s.replace('_', " ")),
                "description": format!("The concierge workflow is in the '{s}' phase; entry actions notify the assigned contractor and record an audit event."),
                "entry": [format!("on_enter_{s}"), "audit_log"],
                "exit": [format!("on_exit_{s}")],
            })
        })
        .collect();
    let mut transitions = Vec::new();
    for (i, from) in STATES.iter().enumerate() {
        for step in 1..=3 {
            let to = STATES[(i + step) % STATES.len()];
            transitions.push(json!({
                "from": from,
                "to": to,
                "event": format!("{}_TO_{}", from.to_uppercase(), to.to_uppercase()),
                "guard": format!("can_move_{from}_to_{to}"),
            }));
        }
    }
    let mermaid: String = transitions
        .iter()
        .map(|t| format!("  {} --> {} : {}\n", t["from"], t["to"], t["event"]))
        .collect();
    json!({
        "machine": "concierge",
        "version": "2025.10.17",
        "initial": STATES[0],
        "states": states,
        "transitions": transitions,
        "mermaid": format!("stateDiagram-v2\n{mermaid}"),
    })
}

/// `GET /api/state-machine/metadata`: version and counts of the machine (~2 KB).
pub fn metadata() -> Value {
    let events: Vec<String> = STATES
        .iter()
        .map(|s| format!("{}_EVENT", s.to_uppercase()))
        .collect();
    json!({
        "machine": "concierge",
        "version": "2025.10.17",
        "stateCount": STATES.len(),
        "transitionCount": STATES.len() * 3,
        "states": STATES,
        "events": events,
        "guards": STATES.iter().map(|s| format!("guard_{s}")).collect::<Vec<_>>(),
        "stateDetails": STATES
            .iter()
            .enumerate()
            .map(|(i, s)| json!({
                "name": s,
                "terminal": i >= STATES.len() - 3,
                "timeoutSeconds": 900 * (i + 1),
                "owner": if i % 2 == 0 { "concierge-team" } else { "contractor-success" },
            }))
            .collect::<Vec<_>>(),
        "generatedBy": "xstate-exporter",
        "notes": "Metadata is static between deployments; the legacy service recomputes it on every request.",
    })
}

/// `GET /api/contractors/:id/bundle`: the contractor's profile, services and reviews (~5 KB).
pub fn contractor_bundle(id: &str, generation: u64) -> Value {
    let services: Vec<Value> = (0..16)
        .map(|i| {
            json!({
                "serviceId": format!("svc-{id}-{i}"),
                "name": format!("Service package {i}"),
                "description": "Residential and light-commercial work with a two-year workmanship warranty.",
                "priceCents": 10_000 + i * 1_250,
            })
        })
        .collect();
    let reviews: Vec<Value> = (0..18)
        .map(|i| {
            json!({
                "reviewId": format!("rev-{id}-{i}"),
                "rating": 3 + (i % 3),
                "text": "Arrived on time, explained the options clearly and left the site clean.",
            })
        })
        .collect();
    json!({
        "id": id,
        "generation": generation,
        "profile": {
            "name": format!("Contractor {id}"),
            "company": format!("Contractor {id} Building Co."),
            "region": "north-east",
            "verified": true,
        },
        "services": services,
        "reviews": reviews,
    })
}

/// `GET /api/events/:id/context`: an event and its surrounding context (~1 KB).
pub fn event_context(id: &str) -> Value {
    json!({
        "eventId": id,
        "type": "session_scheduled",
        "occurredAt": "2025-10-17T01:42:09.936Z",
        "actor": {"kind": "contractor", "id": format!("c-{id}")},
        "context": {
            "sessionId": format!("s-{id}"),
            "previousState": "scheduling",
            "nextState": "scheduled",
            "channel": "web",
            "notes": "Context assembled from the events, sessions and contractors tables by three sequential queries.",
        },
        "timeline": (0..6)
            .map(|i| json!({
                "eventId": format!("evt-{id}-{i}"),
                "type": "state_changed",
                "at": format!("2025-10-17T01:4{i}:00.000Z"),
            }))
            .collect::<Vec<_>>(),
    })
}

/// `GET /api/concierge/sessions/:id/state`: the current state of a session (small).
pub fn session_state(id: &str, generation: u64) -> Value {
    json!({
        "sessionId": id,
        "state": "in_session",
        "generation": generation,
        "updatedAt": "2025-10-17T01:42:09.936Z",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(v: &Value) -> usize {
        serde_json::to_vec(v).map(|b| b.len()).unwrap_or(0)
    }

    #[test]
    fn payload_sizes_are_roughly_production_like() {
        let d = size(&diagram());
        assert!((8_000..14_000).contains(&d), "diagram {d}");
        let m = size(&metadata());
        assert!((1_500..3_000).contains(&m), "metadata {m}");
        let b = size(&contractor_bundle("42", 1));
        assert!((4_000..7_000).contains(&b), "bundle {b}");
        let e = size(&event_context("7"));
        assert!((700..1_500).contains(&e), "event {e}");
    }
}
