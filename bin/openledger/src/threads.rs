//! Thread settings for candle's CPU kernels, fixed at start-up by re-executing the binary.
//!
//! candle reads `RAYON_NUM_THREADS` on every kernel call and, when it is unset, asks
//! `num_cpus` for the physical core count, which formats `/proc/cpuinfo` each time; its
//! elementwise ops also spin-wait at a barrier for their worker threads. Measured on the
//! project's 2-core machine (docs/bench/2026-11-24-train-small-base.md): with
//! `RAYON_NUM_THREADS=<cores>` and `CANDLE_NUM_THREADS=1` (elementwise ops inline, matmuls
//! still on every core) training runs 2.9× faster. Both are read once per process and the
//! binary may not change its own environment (`unsafe_code = "deny"`), so when neither is set
//! the binary replaces itself (`exec`, same pid, same arguments) with both set. A value the
//! user set is kept; `OPENLEDGER_THREADS=keep` turns this off.

/// The variables to add, or `None` when the environment is already as wanted.
pub fn missing(
    get: impl Fn(&str) -> Option<String>,
    cores: usize,
) -> Option<Vec<(String, String)>> {
    if get("OPENLEDGER_THREADS").as_deref() == Some("keep") {
        return None;
    }
    let mut add = Vec::new();
    if get("RAYON_NUM_THREADS").is_none() {
        add.push(("RAYON_NUM_THREADS".to_string(), cores.max(1).to_string()));
    }
    if get("CANDLE_NUM_THREADS").is_none() {
        add.push(("CANDLE_NUM_THREADS".to_string(), "1".to_string()));
    }
    (!add.is_empty()).then_some(add)
}

/// Re-executes the binary with the missing variables set; returns only when that is not
/// needed or not possible (then the process goes on with candle's defaults).
pub fn settle() {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let Some(add) = missing(|k| std::env::var(k).ok(), cores) else {
        return;
    };
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let err = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .envs(add)
            // a second pass never re-executes, even if a variable could not be read back
            .env("OPENLEDGER_THREADS", "keep")
            .exec();
        eprintln!("note: could not re-execute with thread settings ({err}); going on without");
    }
    #[cfg(not(unix))]
    let _ = add;
}

#[cfg(test)]
mod tests {
    use super::missing;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn fills_only_what_is_unset() {
        let add = missing(env(&[]), 2).unwrap_or_default();
        assert_eq!(
            add,
            vec![
                ("RAYON_NUM_THREADS".into(), "2".into()),
                ("CANDLE_NUM_THREADS".into(), "1".into())
            ]
        );
        let add = missing(env(&[("RAYON_NUM_THREADS", "8")]), 2).unwrap_or_default();
        assert_eq!(add, vec![("CANDLE_NUM_THREADS".into(), "1".into())]);
        assert!(
            missing(
                env(&[("RAYON_NUM_THREADS", "8"), ("CANDLE_NUM_THREADS", "4")]),
                2
            )
            .is_none()
        );
        assert!(missing(env(&[("OPENLEDGER_THREADS", "keep")]), 2).is_none());
        assert_eq!(
            missing(env(&[]), 0)
                .unwrap_or_default()
                .first()
                .map(|p| p.1.as_str()),
            Some("1")
        );
    }
}
