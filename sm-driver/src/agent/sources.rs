//! The data sources published per SR, named as Xen Orchestra looks for them.
//!
//! XO reads the *host* RRDs of every host with a PBD of the SR and keeps
//! `iops_read_<id>`, `iops_write_<id>`, `io_throughput_{read,write}_<id>`,
//! `{read,write}_latency_<id>` where `<id>` is the first eight characters of
//! the SR's UUID (`packages/xo-server/src/xapi-stats.mjs`, `getSrStats`:
//! `sr.uuid.slice(0, 8)`; it sums IOPS and throughput over hosts and averages
//! latency). So the owner is `host`, as for tapdisk's own sources.

use super::iostat::Rates;
use super::rrd::v2::{DataSource, Kind, Reading};

/// XO's `<id>` of an SR: the first eight characters of its UUID.
#[must_use]
pub fn short_id(sr_uuid: &str) -> &str {
    sr_uuid.get(..8).unwrap_or(sr_uuid)
}

fn gauge(name: String, description: String, units: &str, value: Reading) -> DataSource {
    DataSource {
        name,
        description,
        owner: "host".into(),
        units: units.into(),
        kind: Kind::Gauge,
        default: true,
        min: 0.0,
        max: f64::INFINITY,
        value,
    }
}

/// The seven data sources of SR `sr_uuid` on this host.
#[must_use]
pub fn sr_sources(sr_uuid: &str, rates: &Rates, live_paths: usize) -> Vec<DataSource> {
    let id = short_id(sr_uuid);
    let float = |name: &str, what: &str, units: &str, value: f64| {
        gauge(
            format!("{name}_{id}"),
            format!("{what} of nvmetcp SR {sr_uuid} on this host"),
            units,
            Reading::Float(value),
        )
    };
    vec![
        float("iops_read", "Read requests per second", "requests/s", rates.iops_read),
        float("iops_write", "Write requests per second", "requests/s", rates.iops_write),
        float("io_throughput_read", "Data read", "MiB/s", rates.throughput_read_mib),
        float("io_throughput_write", "Data written", "MiB/s", rates.throughput_write_mib),
        float("read_latency", "Mean read latency", "μs", rates.read_latency_us),
        float("write_latency", "Mean write latency", "μs", rates.write_latency_us),
        gauge(
            format!("nvmetcp_paths_live_{id}"),
            format!("Live NVMe paths of nvmetcp SR {sr_uuid} on this host"),
            "paths",
            Reading::Int(i64::try_from(live_paths).unwrap_or(i64::MAX)),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::{short_id, sr_sources};
    use crate::agent::iostat::Rates;

    #[test]
    fn names_follow_xo_and_the_issue() {
        let uuid = "3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11";
        assert_eq!(short_id(uuid), "3f1c6d0e");
        let names: Vec<String> = sr_sources(uuid, &Rates::default(), 2).into_iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "iops_read_3f1c6d0e",
                "iops_write_3f1c6d0e",
                "io_throughput_read_3f1c6d0e",
                "io_throughput_write_3f1c6d0e",
                "read_latency_3f1c6d0e",
                "write_latency_3f1c6d0e",
                "nvmetcp_paths_live_3f1c6d0e"
            ]
        );
        // XO's patterns are /^iops_read_(\w+)$/ etc.: the id must be word characters.
        assert!(short_id(uuid).chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    }
}
