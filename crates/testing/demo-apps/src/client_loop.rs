//! The clients' request loop: attempts one after another until the count is reached, the duration is
//! over, the stop file appears, or SIGTERM/SIGINT arrives — whichever comes first — then the summary.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

use crate::summary::{Outcome, Summary};

/// How often the stop file is checked.
const STOP_FILE_POLL: Duration = Duration::from_millis(50);

/// When a client stops. With nothing set it runs until SIGTERM/SIGINT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopWhen {
    /// After this many attempts.
    pub count: Option<u64>,
    /// After this long.
    pub duration: Option<Duration>,
    /// As soon as this file exists.
    pub until_file: Option<PathBuf>,
}

/// Runs `attempt` repeatedly, `interval` apart, until `stop` says so or a stop signal arrives. An attempt
/// interrupted by a stop is dropped and not counted: stopping the client must not show up as a failure.
/// On the first finished attempt a line `first-result: ...` goes to stderr, so a harness can wait for
/// traffic to flow without reading the summary.
pub async fn run<F, Fut>(stop: &StopWhen, interval: Duration, mut attempt: F) -> Summary
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Outcome>,
{
    let mut summary = Summary::default();
    let stopped = stop_signal(stop);
    tokio::pin!(stopped);
    loop {
        if stop.count.is_some_and(|count| summary.sent >= count) {
            break;
        }
        tokio::select! {
            biased;
            () = &mut stopped => break,
            outcome = attempt() => {
                if summary.sent == 0 {
                    eprintln!("first-result: {outcome:?}");
                }
                summary.record(outcome);
            }
        }
        let last = stop.count.is_some_and(|count| summary.sent >= count);
        if !interval.is_zero() && !last {
            tokio::select! {
                biased;
                () = &mut stopped => break,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
    summary
}

/// Resolves when the duration is over, the stop file exists, or SIGTERM/SIGINT arrives. The signal
/// handlers are installed on the first poll, before any attempt starts.
async fn stop_signal(stop: &StopWhen) {
    use tokio::signal::unix::{SignalKind, signal};
    let deadline = stop.duration.map(|d| Instant::now() + d);
    let mut term = signal(SignalKind::terminate()).expect("install a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install a SIGINT handler");
    let file = async {
        match &stop.until_file {
            Some(path) => {
                while !path.exists() {
                    tokio::time::sleep(STOP_FILE_POLL).await;
                }
            }
            None => std::future::pending().await,
        }
    };
    let timer = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        () = file => {}
        () = timer => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> std::future::Ready<Outcome> {
        std::future::ready(Outcome::Ok)
    }

    /// A count stops after exactly that many attempts.
    #[tokio::test]
    async fn stops_at_count() {
        let stop = StopWhen {
            count: Some(5),
            ..StopWhen::default()
        };
        let s = run(&stop, Duration::ZERO, ok).await;
        assert_eq!((s.sent, s.ok), (5, 5));
        let none = run(
            &StopWhen {
                count: Some(0),
                ..StopWhen::default()
            },
            Duration::ZERO,
            ok,
        )
        .await;
        assert_eq!(none.sent, 0);
    }

    /// A duration stops the loop; an attempt cut short by it is not counted.
    #[tokio::test(start_paused = true)]
    async fn stops_after_duration_without_counting_the_interrupted_attempt() {
        let stop = StopWhen {
            duration: Some(Duration::from_millis(250)),
            ..StopWhen::default()
        };
        let s = run(&stop, Duration::ZERO, || async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Outcome::Response {
                status: 200,
                served_by: None,
            }
        })
        .await;
        assert_eq!((s.sent, s.ok, s.errors), (2, 2, 0));
    }

    /// The stop file ends the loop once it appears.
    #[tokio::test]
    async fn stops_when_file_appears() {
        let dir = std::env::temp_dir().join(format!("osm-demo-stop-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let stop = StopWhen {
            until_file: Some(dir.clone()),
            ..StopWhen::default()
        };
        let mut n = 0;
        let s = run(&stop, Duration::from_millis(1), || {
            n += 1;
            if n == 3 {
                std::fs::write(&dir, "").unwrap();
            }
            ok()
        })
        .await;
        std::fs::remove_file(&dir).unwrap();
        assert!(s.sent >= 3, "{s:?}");
    }
}
