//! Shrinking a failing sequence.

use super::*;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Shrinking
// ---------------------------------------------------------------------------------------------

/// Whether a replay of `steps` reproduces a failure of `kind`; returns the op index where an
/// op-level failure was detected (the rest of the sequence is then irrelevant).
fn reproduces(
    cfg: &Cfg,
    steps: &[Step],
    kind: &FailKind,
    dense_from: usize,
    runs: &mut u32,
) -> Option<Option<usize>> {
    *runs += 1;
    let stages = matches!(
        kind,
        FailKind::Remount(_) | FailKind::Lower | FailKind::Setup
    );
    let r = run_sequence(cfg, Plan::Replay(steps.to_vec(), dense_from, stages));
    r.failures.iter().find(|f| f.kind == *kind).map(|f| f.at)
}

pub(crate) fn shrink(
    cfg: &Cfg,
    steps: Vec<Step>,
    kind: &FailKind,
    budget: Duration,
) -> (Vec<Step>, u32, bool) {
    let deadline = Instant::now() + budget;
    let mut runs = 0;
    let mut cur = steps;
    let cut = |v: Vec<Step>, at: Option<usize>| -> Vec<Step> {
        match at {
            Some(i) if i + 1 < v.len() => v[..=i].to_vec(),
            _ => v,
        }
    };
    // The failure must reproduce from fresh fixtures at all; a tree divergence is pinpointed by
    // comparing after every op since the last periodic comparison that passed.
    let dense = if *kind == FailKind::Tree {
        cur.len().saturating_sub(cfg.check_every)
    } else {
        usize::MAX
    };
    match reproduces(cfg, &cur, kind, dense, &mut runs) {
        Some(at) => cur = cut(cur, at),
        None => return (cur, runs, false),
    }
    let mut n = 2usize;
    while cur.len() > 1 && Instant::now() < deadline {
        let chunk = cur.len().div_ceil(n);
        let mut reduced = false;
        // Later chunks first: ops near the end are the likeliest to be irrelevant set-up.
        for c in (0..n).rev() {
            if Instant::now() >= deadline {
                break;
            }
            let lo = c * chunk;
            if lo >= cur.len() {
                continue;
            }
            let hi = ((c + 1) * chunk).min(cur.len());
            let mut cand = cur[..lo].to_vec();
            cand.extend_from_slice(&cur[hi..]);
            if cand.is_empty() {
                continue;
            }
            if let Some(at) = reproduces(cfg, &cand, kind, usize::MAX, &mut runs) {
                cur = cut(cand, at);
                n = (n - 1).max(2);
                reduced = true;
                break;
            }
        }
        if !reduced {
            if n >= cur.len() {
                break;
            }
            n = (n * 2).min(cur.len());
        }
    }
    (cur, runs, Instant::now() < deadline)
}
