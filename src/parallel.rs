//! Work spread over the machine's cores, with results that do not depend on how it was spread.
//!
//! [`map`] hands out the items of a list one at a time to a thread per core (whichever thread is
//! free takes the next item, so one slow item does not hold up a whole share of the list) and
//! returns the results in the list's order. Each item is computed by one call on one thread, so
//! what a caller builds from the results is the same for any number of threads. In the browser
//! (wasm32) a Web Worker has no threads of its own: the items run one after another.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The thread count set by [`set_threads`] (0: one per core).
static THREADS: AtomicUsize = AtomicUsize::new(0);

/// How many threads heavy work uses: the machine's cores natively (or what [`set_threads`] set),
/// one in the browser.
pub fn threads() -> usize {
    #[cfg(target_arch = "wasm32")]
    {
        1
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        match THREADS.load(Ordering::Relaxed) {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// Uses `n` threads from now on (the CLI's `--threads`); 0 goes back to one per core. Results
/// do not depend on it, only the time they take.
pub fn set_threads(n: usize) {
    THREADS.store(n, Ordering::Relaxed);
}

/// `[f(0), f(1), ..., f(count - 1)]`, the items taken in index order by whichever of
/// [`threads`] threads is free.
pub fn map<T, F>(count: usize, f: F) -> Vec<T>
where
    T: Send,
    F: Fn(usize) -> T + Sync,
{
    let threads = threads().min(count);
    if threads <= 1 {
        return (0..count).map(f).collect();
    }
    #[cfg(target_arch = "wasm32")]
    unreachable!("one thread in the browser");
    #[cfg(not(target_arch = "wasm32"))]
    {
        let next = AtomicUsize::new(0);
        let mut results: Vec<Option<T>> = (0..count).map(|_| None).collect();
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::channel();
            for _ in 0..threads {
                let (tx, next, f) = (tx.clone(), &next, &f);
                scope.spawn(move || loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count || tx.send((i, f(i))).is_err() {
                        break;
                    }
                });
            }
            drop(tx);
            for (i, r) in rx {
                results[i] = Some(r);
            }
        });
        results
            .into_iter()
            .map(|r| r.expect("every item is computed once"))
            .collect()
    }
}

/// [`map`], with `observe(i, &result)` called on the calling thread as each item finishes (in
/// the order they finish: for progress). When `observe` returns `false` no further item is
/// started; the items never started are `None` (a suffix of the list, since items start in
/// order).
pub fn map_observed<T, F, O>(count: usize, f: F, mut observe: O) -> Vec<Option<T>>
where
    T: Send,
    F: Fn(usize) -> T + Sync,
    O: FnMut(usize, &T) -> bool,
{
    let threads = threads().min(count);
    if threads <= 1 {
        let mut out: Vec<Option<T>> = (0..count).map(|_| None).collect();
        for (i, slot) in out.iter_mut().enumerate() {
            let r = f(i);
            let go_on = observe(i, &r);
            *slot = Some(r);
            if !go_on {
                break;
            }
        }
        return out;
    }
    #[cfg(target_arch = "wasm32")]
    unreachable!("one thread in the browser");
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::sync::atomic::AtomicBool;
        let (next, stop) = (AtomicUsize::new(0), AtomicBool::new(false));
        let mut results: Vec<Option<T>> = (0..count).map(|_| None).collect();
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::channel();
            for _ in 0..threads {
                let (tx, next, stop, f) = (tx.clone(), &next, &stop, &f);
                // An index once taken is always computed, so the items never started are the
                // indices never taken: a suffix.
                scope.spawn(move || loop {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count || tx.send((i, f(i))).is_err() {
                        break;
                    }
                });
            }
            drop(tx);
            for (i, r) in rx {
                if !observe(i, &r) {
                    stop.store(true, Ordering::Relaxed);
                }
                results[i] = Some(r);
            }
        });
        results
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_order_whatever_the_timing() {
        // Items of very different cost, so threads finish them out of order.
        let out = map(37, |i| {
            if i % 5 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(3));
            }
            i * i
        });
        assert_eq!(out, (0..37).map(|i| i * i).collect::<Vec<_>>());
        assert!(map(0, |i| i).is_empty());
        assert_eq!(map(1, |i| i + 7), vec![7]);
    }

    #[test]
    fn observed_map_sees_every_item_and_can_stop() {
        let mut seen = Vec::new();
        let out = map_observed(
            20,
            |i| i + 1,
            |i, &r| {
                seen.push((i, r));
                true
            },
        );
        assert_eq!(out, (1..=20).map(Some).collect::<Vec<_>>());
        seen.sort();
        assert_eq!(seen, (0..20).map(|i| (i, i + 1)).collect::<Vec<_>>());
        // Items after the first wait until it has been observed (and the stop asked for), then
        // take a while: a thread looks for its next item long after the stop.
        let first_seen = std::sync::atomic::AtomicBool::new(false);
        let mut calls = 0;
        let stopped = map_observed(
            1000,
            |i| {
                if i > 0 {
                    while !first_seen.load(Ordering::SeqCst) {
                        std::thread::yield_now();
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                i
            },
            |_, _| {
                calls += 1;
                first_seen.store(true, Ordering::SeqCst);
                false
            },
        );
        let started = stopped.iter().take_while(|r| r.is_some()).count();
        assert!(
            stopped[started..].iter().all(Option::is_none),
            "a suffix never started"
        );
        assert!(
            started >= 1 && calls < 50,
            "no new item after the stop ({calls} ran)"
        );
    }
}
