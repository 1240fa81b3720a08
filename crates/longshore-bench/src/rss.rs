//! Resident memory of this process, from `/proc/self/status` (Linux; elsewhere zero).

/// Resets the peak (VmHWM) to the current RSS, so the next [`peak_kib`] covers one measurement.
pub fn reset_peak() {
    // Writing "5" to clear_refs resets the high-water mark (Linux ≥ 4.0).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn field_kib(name: &str) -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Current RSS in KiB.
pub fn current_kib() -> u64 {
    field_kib("VmRSS:")
}

/// Peak RSS since the last [`reset_peak`], in KiB.
pub fn peak_kib() -> u64 {
    field_kib("VmHWM:").max(current_kib())
}
