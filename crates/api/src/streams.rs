//! Caps on open event streams (`GET /v1/rollouts/{id}/events`): at most so many per API key
//! and so many per process. A stream holds a [`StreamSlot`] for as long as it is open; the slot
//! is given back when the stream's body is dropped (it ended, the client went away, or the
//! process stopped), so nothing polls a counter.

use std::{collections::HashMap, sync::Arc};

/// The open event streams of this process, counted per API key. Shared by every HTTP worker.
#[derive(Clone)]
pub struct StreamSlots {
    inner: Arc<Inner>,
}

struct Inner {
    per_key: usize,
    total: usize,
    open: parking_lot::Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_key: HashMap<String, usize>,
}

/// Why no slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The key has as many streams open as it may.
    KeyFull,
    /// The process has as many streams open as it may.
    ProcessFull,
}

impl std::fmt::Debug for StreamSlots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSlots")
            .field("per_key", &self.inner.per_key)
            .field("total", &self.inner.total)
            .field("open", &self.open())
            .finish()
    }
}

impl StreamSlots {
    /// At most `per_key` streams per API key and `total` per process (each at least 1).
    pub fn new(per_key: usize, total: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                per_key: per_key.max(1),
                total: total.max(1),
                open: parking_lot::Mutex::new(Open::default()),
            }),
        }
    }

    /// The caps `settings` names (`max_streams_per_key`, `max_streams`).
    pub fn for_settings(settings: &crate::ApiSettings) -> Self {
        Self::new(settings.max_streams_per_key, settings.max_streams)
    }

    /// Streams open now, in the whole process.
    pub fn open(&self) -> usize {
        self.inner.open.lock().total
    }

    /// A slot for one more stream of `key`, unless the key or the process is at its cap.
    pub(crate) fn acquire(&self, key: &str) -> Result<StreamSlot, Refused> {
        let mut open = self.inner.open.lock();
        if open.by_key.get(key).copied().unwrap_or(0) >= self.inner.per_key {
            return Err(Refused::KeyFull);
        }
        if open.total >= self.inner.total {
            return Err(Refused::ProcessFull);
        }
        open.total += 1;
        *open.by_key.entry(key.to_owned()).or_insert(0) += 1;
        Ok(StreamSlot { inner: Arc::clone(&self.inner), key: key.to_owned() })
    }
}

impl Default for StreamSlots {
    fn default() -> Self {
        Self::for_settings(&crate::ApiSettings::default())
    }
}

/// One open stream's place; dropping it frees the place.
pub(crate) struct StreamSlot {
    inner: Arc<Inner>,
    key: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.inner.open.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_key.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                // Keys without open streams take no room.
                open.by_key.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_per_key_and_per_process_and_come_back_on_drop() {
        let slots = StreamSlots::new(2, 3);
        let a1 = slots.acquire("a").unwrap();
        let a2 = slots.acquire("a").unwrap();
        assert_eq!(slots.acquire("a").err(), Some(Refused::KeyFull));
        let b1 = slots.acquire("b").unwrap();
        assert_eq!(slots.acquire("c").err(), Some(Refused::ProcessFull));
        // A key at its cap is told so even when the process is full too.
        assert_eq!(slots.acquire("a").err(), Some(Refused::KeyFull));
        assert_eq!(slots.open(), 3);
        drop(a1);
        assert_eq!(slots.open(), 2);
        let c1 = slots.acquire("c").unwrap();
        drop((a2, b1, c1));
        assert_eq!(slots.open(), 0);
        assert!(slots.inner.open.lock().by_key.is_empty(), "no entry left for idle keys");
    }
}
