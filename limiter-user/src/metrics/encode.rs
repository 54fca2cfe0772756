//! The helpers every metric family is written with (prometheus-client's descriptor encoder).

use std::fmt;

use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

pub type Labels = Vec<(&'static str, String)>;

/// Writes one metric family: its descriptor, then each labelled sample.
pub fn family<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    samples: impl IntoIterator<Item = (Labels, M)>,
) -> fmt::Result {
    let mut samples = samples.into_iter().peekable();
    let Some((_, first)) = samples.peek() else {
        return Ok(());
    };
    let mut metric = enc.encode_descriptor(name, help, unit, first.metric_type())?;
    for (labels, value) in samples {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Writes a metric without labels.
pub fn single(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl EncodeMetric,
) -> fmt::Result {
    value.encode(enc.encode_descriptor(name, help, None, value.metric_type())?)
}

pub fn gauge<N: EncodeGaugeValue>(
    name: &str,
    help: &str,
    value: N,
    enc: &mut DescriptorEncoder,
) -> fmt::Result {
    single(enc, name, help, ConstGauge::new(value))
}
