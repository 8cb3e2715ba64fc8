//! What the benches share: reading back the medians criterion measured in this run.

use std::time::SystemTime;

/// Median time per iteration of criterion benchmark `group/name`, in ns, if it was
/// measured since `since` (an older estimate is from another run, e.g. one that filtered
/// this benchmark out, and is not this run's figure).
pub fn median_ns(group: &str, name: &str, since: SystemTime) -> Option<f64> {
    let dir = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        std::path::PathBuf::from,
    );
    let path = dir
        .join("criterion")
        .join(group)
        .join(name)
        .join("new/estimates.json");
    if std::fs::metadata(&path).ok()?.modified().ok()? < since {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    v["median"]["point_estimate"].as_f64()
}
