//! The demo's terminal view: per-app counters, the split share, and what the control plane did. Pure
//! rendering from stats snapshots, so the summary logic is testable without pods.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::time::{Duration, Instant};

use osm_demo_apps::stats::AppStats;

use super::manifests::Mode;

/// Stats of every app at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub at: Option<Instant>,
    pub apps: BTreeMap<String, AppStats>,
}

/// What is configured now, and since when (the expected-behaviour window starts then).
#[derive(Clone, Debug)]
pub struct Config {
    pub mode: Mode,
    pub split: (u32, u32),
    pub since: Instant,
}

/// Counter deltas between two snapshots.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Delta {
    pub sent: u64,
    pub ok: u64,
    pub refused: u64,
    pub served_by: BTreeMap<String, u64>,
}

pub fn delta(app: &str, from: &Snapshot, to: &Snapshot) -> Delta {
    let zero = AppStats::default();
    let a = from.apps.get(app).unwrap_or(&zero);
    let b = to.apps.get(app).unwrap_or(&zero);
    Delta {
        sent: b.sent.saturating_sub(a.sent),
        ok: b.ok.saturating_sub(a.ok),
        refused: b.refused.saturating_sub(a.refused),
        served_by: b
            .served_by
            .iter()
            .map(|(k, v)| (k.clone(), v.saturating_sub(*a.served_by.get(k).unwrap_or(&0))))
            .collect(),
    }
}

/// The share of bookbuyer's successful requests served by bookstore-v1, if any succeeded.
pub fn v1_share(d: &Delta) -> Option<f64> {
    let v1 = *d.served_by.get("bookstore-v1").unwrap_or(&0) as f64;
    let v2 = *d.served_by.get("bookstore-v2").unwrap_or(&0) as f64;
    (v1 + v2 > 0.0).then(|| v1 / (v1 + v2))
}

/// One expectation of the demo and whether it held.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    pub what: String,
    pub ok: bool,
    pub observed: String,
}

/// What the mesh must show for `config` over the window `d_*` (deltas since the config settled).
pub fn checks(config: &Config, buyer: &Delta, thief: &Delta) -> Vec<Check> {
    let mut out = vec![Check {
        what: "bookbuyer is served".into(),
        ok: buyer.ok > 0 && buyer.refused * 100 <= buyer.sent,
        observed: format!(
            "{} of {} succeeded, {} refused",
            buyer.ok, buyer.sent, buyer.refused
        ),
    }];
    out.push(match config.mode {
        Mode::Smi => Check {
            what: "bookthief is refused (SMI mode)".into(),
            ok: thief.sent > 0 && thief.ok == 0,
            observed: format!("{} of {} succeeded", thief.ok, thief.sent),
        },
        Mode::Permissive => Check {
            what: "bookthief is served (permissive mode)".into(),
            ok: thief.ok > 0,
            observed: format!("{} of {} succeeded", thief.ok, thief.sent),
        },
    });
    let (v1, v2) = config.split;
    let want = if v1 + v2 == 0 {
        0.5
    } else {
        v1 as f64 / (v1 + v2) as f64
    };
    let got = v1_share(buyer);
    out.push(Check {
        what: format!("split within ±10 % of {v1}/{v2}"),
        ok: got.is_some_and(|g| (g - want).abs() <= 0.10),
        observed: match got {
            Some(g) => format!(
                "bookstore-v1 {:.1} %, bookstore-v2 {:.1} %",
                g * 100.0,
                (1.0 - g) * 100.0
            ),
            None => "no successful request".into(),
        },
    });
    out
}

/// Keeps recent snapshots for "last N seconds" figures.
#[derive(Default)]
pub struct History {
    snaps: VecDeque<Snapshot>,
}

impl History {
    pub fn push(&mut self, s: Snapshot) {
        self.snaps.push_back(s);
        while self.snaps.len() > 64 {
            self.snaps.pop_front();
        }
    }

    pub fn latest(&self) -> Snapshot {
        self.snaps.back().cloned().unwrap_or_default()
    }

    /// The oldest snapshot not older than `window`.
    pub fn ago(&self, window: Duration) -> Snapshot {
        let now = self.snaps.back().and_then(|s| s.at).unwrap_or_else(Instant::now);
        self.snaps
            .iter()
            .find(|s| s.at.is_some_and(|t| now.duration_since(t) <= window))
            .cloned()
            .unwrap_or_default()
    }
}

pub struct Frame<'a> {
    pub config: &'a Config,
    pub elapsed: Duration,
    pub config_dir: &'a str,
    pub proxies: usize,
    pub in_sync: usize,
    pub last_event: &'a str,
}

pub fn render(frame: &Frame<'_>, history: &History) -> String {
    let now = history.latest();
    let recent = history.ago(Duration::from_secs(5));
    let mut s = String::new();
    let (v1, v2) = frame.config.split;
    let secs = frame.elapsed.as_secs();
    let _ = writeln!(
        s,
        "OSM demo: bookstore    mode {}    split bookstore-v1 {v1} / bookstore-v2 {v2}    {:02}:{:02}    Ctrl-C to stop",
        frame.config.mode.as_str().to_uppercase(),
        secs / 60,
        secs % 60
    );
    let _ = writeln!(
        s,
        "config dir {}   change it live: osm demo mode smi|permissive, osm demo split V1 V2\n",
        frame.config_dir
    );
    let _ = writeln!(
        s,
        "{:<14} {:>8} {:>8} {:>8}   {:<28}",
        "app", "sent", "ok", "refused", "last 5 s"
    );
    for app in ["bookbuyer", "bookthief"] {
        let total = now.apps.get(app).cloned().unwrap_or_default();
        let d = delta(app, &recent, &now);
        let verdict = if d.sent == 0 {
            "-".to_string()
        } else if d.ok == d.sent {
            format!("served ({}/{})", d.ok, d.sent)
        } else if d.ok == 0 {
            format!("REFUSED ({}/{})", d.refused, d.sent)
        } else {
            format!("{} ok, {} refused", d.ok, d.refused)
        };
        let _ = writeln!(
            s,
            "{app:<14} {:>8} {:>8} {:>8}   {verdict}",
            total.sent, total.ok, total.refused
        );
    }
    for app in ["bookstore-v1", "bookstore-v2"] {
        let st = now.apps.get(app).cloned().unwrap_or_default();
        let _ = writeln!(
            s,
            "{app:<14} sold {:>6}   restocks ok {:>6}   failed {:>4}",
            st.books_sold.unwrap_or(0),
            st.restock_ok.unwrap_or(0),
            st.restock_failed.unwrap_or(0)
        );
    }
    let wh = now.apps.get("bookwarehouse").cloned().unwrap_or_default();
    let _ = writeln!(
        s,
        "{:<14} restocked {:>6}   (SQLite stock total {})\n",
        "bookwarehouse",
        wh.restocked.unwrap_or(0),
        wh.stock_total.unwrap_or(0)
    );
    let d = delta("bookbuyer", &recent, &now);
    match v1_share(&d) {
        Some(g) => {
            let bar = (g * 40.0).round() as usize;
            let _ = writeln!(
                s,
                "split (bookbuyer, last 5 s)  v1 {:>5.1} % [{}{}] v2 {:>5.1} %",
                g * 100.0,
                "#".repeat(bar),
                "-".repeat(40 - bar),
                (1.0 - g) * 100.0
            );
        }
        None => {
            let _ = writeln!(s, "split (bookbuyer, last 5 s)  no successful request");
        }
    }
    let _ = writeln!(
        s,
        "control plane: {} proxies, {} in sync; {}",
        frame.proxies, frame.in_sync, frame.last_event
    );
    s
}
