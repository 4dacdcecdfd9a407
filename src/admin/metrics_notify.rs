//! `/metrics` for `[[notify.webhooks]]`: deliveries by result, the queue's
//! depth and the circuit, as each webhook's task last published them.
//! Families appear only when webhooks are configured.

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::metrics::{Labels, gauges};
use crate::state::Shared;

pub(super) fn encode(enc: &mut DescriptorEncoder, shared: &Shared) -> std::fmt::Result {
    let hooks = shared.notify.all();
    if hooks.is_empty() {
        return Ok(());
    }
    let label = |name: &str| -> Labels { vec![("webhook", name.to_owned())] };
    // The encoder appends `_total`.
    let mut deliveries = enc.encode_descriptor(
        "vigil_notify_deliveries",
        "Webhook delivery attempts by result: delivered, failed (each failed attempt), dropped (refused or given up).",
        None,
        MetricType::Counter,
    )?;
    for (name, s) in &hooks {
        for (result, value) in [
            ("delivered", s.delivered_total),
            ("failed", s.failed_total),
            ("dropped", s.dropped_total),
        ] {
            let mut labels = label(name);
            labels.push(("result", result.to_owned()));
            deliveries
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, f64>(&value, None)?;
        }
    }
    gauges(
        enc,
        "vigil_notify_queue_depth",
        "Webhook deliveries waiting to be made.",
        hooks.iter().map(|(n, s)| (label(n), s.queued as i64)),
    )?;
    gauges(
        enc,
        "vigil_notify_circuit_open",
        "1 while the webhook's circuit is open (deliveries wait; one probe per interval).",
        hooks
            .iter()
            .map(|(n, s)| (label(n), i64::from(s.circuit_open))),
    )
}

#[cfg(test)]
mod tests {
    use crate::state::Shared;

    use super::super::metrics::classic_text_for_tests as text;

    #[test]
    fn webhooks_export_deliveries_queue_and_circuit() {
        let shared = Shared::new("t".into(), None);
        assert!(!text(shared.clone()).contains("vigil_notify_"));
        shared.notify.update("ops", |s| {
            s.delivered_total = 3;
            s.failed_total = 2;
            s.queued = 1;
            s.circuit_open = true;
        });
        let t = text(shared);
        for needle in [
            "vigil_notify_deliveries_total{webhook=\"ops\",result=\"delivered\"} 3",
            "vigil_notify_deliveries_total{webhook=\"ops\",result=\"failed\"} 2",
            "vigil_notify_deliveries_total{webhook=\"ops\",result=\"dropped\"} 0",
            "vigil_notify_queue_depth{webhook=\"ops\"} 1",
            "vigil_notify_circuit_open{webhook=\"ops\"} 1",
        ] {
            assert!(t.contains(needle), "missing {needle}:\n{t}");
        }
    }
}
