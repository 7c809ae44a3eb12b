//! What the pipeline yields: a [`Batch`] with one contiguous `[B, 3, H, W]` f32 buffer per view.
//! Buffers come from a bounded pool and go back to it when the batch is dropped, so the steady
//! state allocates nothing per sample or per batch.

/// Buffers of one batch, recycled through the pool.
#[derive(Debug, Default)]
pub struct Buffers {
    /// One `[B, 3, H, W]` buffer per view.
    pub views: Vec<Vec<f32>>,
    /// Class ids, `-1` where a row has no label.
    pub labels: Vec<i64>,
    /// Attributes, `B × attribute count`, when the dataset has them.
    pub attributes: Vec<i8>,
    /// Source index of each sample (the shards' `index` column).
    pub indices: Vec<i64>,
    /// Position of each sample in the split (row id; the key of its random stream).
    pub rows: Vec<u64>,
}

/// Mutable access to every array of a [`Batch`], each cut to the batch's length: for a binding
/// that hands the buffers to another runtime without copying (the Python package wraps them
/// in NumPy arrays that keep the batch, hence its buffers, alive). Heap buffers do not move
/// when the [`Batch`] does, so pointers taken from these slices stay valid until it drops.
#[derive(Debug)]
pub struct BatchMut<'a> {
    /// One `[B, 3, H, W]` slice per view.
    pub views: Vec<&'a mut [f32]>,
    /// Class ids (`-1` = unlabeled), `B` of them.
    pub labels: &'a mut [i64],
    /// 0/1 attributes, `B × num_attributes`, row-major (empty when none).
    pub attributes: &'a mut [i8],
    /// Source indices, `B` of them.
    pub indices: &'a mut [i64],
}

/// A batch of augmented samples.
#[derive(Debug)]
pub struct Batch {
    /// Batch number within this rank's epoch.
    pub seq: u64,
    /// `[B, 3, H, W]` of each view (B may be smaller in the last batch).
    pub shape: [usize; 4],
    /// Attributes per sample (0 when none).
    pub num_attributes: usize,
    pub(crate) buf: Buffers,
    pub(crate) pool: Option<async_channel::Sender<Buffers>>,
}

impl Batch {
    /// Samples in the batch.
    pub fn len(&self) -> usize {
        self.shape[0]
    }

    /// True when the batch holds no sample.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of views.
    pub fn num_views(&self) -> usize {
        self.buf.views.len()
    }

    /// View `v` as a contiguous `[B, 3, H, W]` slice, normalized.
    pub fn view(&self, v: usize) -> &[f32] {
        &self.buf.views[v][..self.shape.iter().product::<usize>()]
    }

    /// Class ids (`-1` = unlabeled).
    pub fn labels(&self) -> &[i64] {
        &self.buf.labels
    }

    /// 0/1 attributes, `len() × num_attributes`, row-major.
    pub fn attributes(&self) -> &[i8] {
        &self.buf.attributes
    }

    /// Source indices.
    pub fn indices(&self) -> &[i64] {
        &self.buf.indices
    }

    /// Row ids in the split.
    pub fn rows(&self) -> &[u64] {
        &self.buf.rows
    }

    /// Every array, mutable, at once (see [`BatchMut`]).
    pub fn parts_mut(&mut self) -> BatchMut<'_> {
        let n = self.shape.iter().product::<usize>();
        let buf = &mut self.buf;
        BatchMut {
            views: buf.views.iter_mut().map(|v| &mut v[..n]).collect(),
            labels: &mut buf.labels,
            attributes: &mut buf.attributes,
            indices: &mut buf.indices,
        }
    }

    /// Takes the buffers out (they then do not return to the pool).
    pub fn into_buffers(mut self) -> Buffers {
        self.pool = None;
        std::mem::take(&mut self.buf)
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            let _ = pool.try_send(std::mem::take(&mut self.buf));
        }
    }
}
