//! How the core reports progress and learns that the caller wants it to stop. The CLI draws a bar
//! with an ETA, the web page posts messages from its worker; the core only calls this trait.

/// A sink for progress events. All methods have do-nothing defaults.
pub trait Progress {
    /// A new stage begins (`"analyse"`, `"encode"`, `"decode"`) with `total` units of work
    /// (parameters, for the tensor stages).
    fn stage(&mut self, _name: &str, _total: u64) {}

    /// `done` more units of the current stage are finished; `item` names what was just done
    /// (a tensor name).
    fn advance(&mut self, _done: u64, _item: &str) {}

    /// Work on `item`, the `index`-th (from 1) of `count`, begins: for a caller that shows what
    /// is being worked on where the core only reports whole items (the browser's analysis).
    fn working_on(&mut self, _item: &str, _index: u64, _count: u64) {}

    /// Polled between tensors; returning true stops the run with `Error::Cancelled`.
    fn cancelled(&self) -> bool {
        false
    }
}

/// Progress that goes nowhere.
pub struct NoProgress;

impl Progress for NoProgress {}
