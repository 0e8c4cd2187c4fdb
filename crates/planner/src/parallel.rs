//! Running pure work on several threads with the result of running it in order. Loading and
//! planning large inventories use every core; nothing here calls the API.

use std::sync::atomic::{AtomicUsize, Ordering};

/// How many threads `work` units deserve: every core the process may use, but at least
/// `min_per_thread` units each (below that a thread costs more than it saves), and one.
pub(crate) fn threads_for(work: usize, min_per_thread: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(work / min_per_thread.max(1))
        .max(1)
}

/// `f` of every item, each on a thread of its own, results in the items' order. A panic in a
/// thread is resumed in the caller.
pub(crate) fn on_threads<T, R, F>(items: &[T], f: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = items
            .iter()
            .map(|item| scope.spawn(move || f(item)))
            .collect();
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

/// `f` applied to every item on up to `threads` threads, results in the items' order: the
/// same as a sequential map when `f` only reads shared state. Workers take the next item from
/// a shared counter, because items (namespaces) differ widely in size.
pub(crate) fn map<T, R, F>(items: &[T], threads: usize, f: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    // Below this many items a thread costs more than it saves.
    const MIN_ITEMS_PER_THREAD: usize = 16;
    let threads = threads.min(items.len() / MIN_ITEMS_PER_THREAD).max(1);
    if threads == 1 {
        return items.iter().map(&f).collect();
    }
    let next = AtomicUsize::new(0);
    let workers: Vec<usize> = (0..threads).collect();
    let mut results: Vec<(usize, R)> = on_threads(&workers, |_| {
        let mut out = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else {
                break;
            };
            out.push((i, f(item)));
        }
        out
    })
    .into_iter()
    .flatten()
    .collect();
    results.sort_unstable_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_map_keeps_the_order_of_the_items() {
        // Uneven work, so that workers finish out of order.
        let items: Vec<u64> = (0..200).map(|i| (i * 7919) % 101).collect();
        let work = |n: &u64| (0..*n * 1000).fold(*n, |a, b| a.wrapping_mul(31).wrapping_add(b));
        let sequential: Vec<u64> = items.iter().map(work).collect();
        for threads in [1, 2, 3, 8] {
            assert_eq!(map(&items, threads, work), sequential);
        }
        assert!(map(&[] as &[u64], 4, work).is_empty());
        assert_eq!(on_threads(&items, work), sequential);
    }
}
