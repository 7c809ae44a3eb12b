//! After warm-up, making a view allocates nothing in this crate's ops: the pipeline owns the
//! output buffers and `Scratch` keeps the intermediates. (fast_image_resize builds its
//! coefficient tables per call, so the resize itself is excluded: the views here use the
//! padded-crop geometry and exercise every other op.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use siamlab_pipeline::augment::{
    sample_rng, ColorJitter, Geometry, Normalize, PaddedCrop, Recipe, RecipeConfig, Scratch, SimSiamConfig, ViewParams,
};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(|c| c.get())
}

#[test]
fn views_allocate_nothing_after_warm_up() {
    let size = 96;
    let recipe =
        Recipe::new(RecipeConfig::SimSiam(SimSiamConfig::paper(size)), Normalize::new([0.5; 3], [0.25; 3]).unwrap())
            .unwrap();
    let img: Vec<u8> = (0..size * size * 3).map(|i| (i * 31 % 253) as u8).collect();
    let mut out = vec![0f32; recipe.output_len()];
    let mut scratch = Scratch::new();
    let jitter = ColorJitter::simsiam();
    let view = |i: u64| {
        let mut rng = sample_rng(0, 0, i, 0);
        ViewParams {
            geometry: Geometry::PaddedCrop(PaddedCrop { top: (i % 5) as i64 - 2, left: (i % 3) as i64 - 1 }),
            flip: i % 2 == 0,
            jitter: jitter.sample(&mut rng),
            grayscale: i % 4 == 0,
            blur_sigma: Some(0.1 + (i % 7) as f64 * 0.25),
            solarize: i % 3 == 0,
        }
    };
    // The counter sees this thread's allocations.
    let before = allocs();
    std::hint::black_box(vec![0u8; 16]);
    assert_eq!(allocs() - before, 1);
    // Warm-up sizes every buffer.
    for i in 0..4 {
        recipe.apply_params(&img, size, size, &view(i), &mut out, &mut scratch).unwrap();
    }
    let params: Vec<ViewParams> = (0..64).map(view).collect();
    let before = allocs();
    for p in &params {
        recipe.apply_params(&img, size, size, p, &mut out, &mut scratch).unwrap();
    }
    assert_eq!(allocs() - before, 0, "allocations in steady state");
    // Sampling parameters does not allocate either.
    let before = allocs();
    for i in 0..64 {
        let mut rng = sample_rng(1, 0, i, 1);
        std::hint::black_box(recipe.sample(size, size, &mut rng).unwrap());
    }
    assert_eq!(allocs() - before, 0, "allocations while sampling");
}
