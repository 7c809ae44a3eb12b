//! Contact sheets: a grid of samples under a title, each cell one image (or several side by
//! side: the augmented views of one sample) with its caption under it. Small images are
//! enlarged by a whole factor with nearest-neighbour sampling (pixels stay honest) so that a
//! cell is at least [`MIN_CELL`] px; large ones are shrunk by averaging.

use image::{Rgb, RgbImage};

use crate::text;

/// Smallest side of an image in a cell when the scale is chosen automatically.
pub const MIN_CELL: u32 = 96;
/// Largest side of an image in a cell when the scale is chosen automatically.
pub const MAX_CELL: u32 = 192;
const TITLE_PX: f32 = 18.0;
const SUBTITLE_PX: f32 = 13.0;
const CAPTION_PX: f32 = 13.0;
const PAD: u32 = 8;
const GAP: u32 = 4;
const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const BLACK: Rgb<u8> = Rgb([0, 0, 0]);
const GREY: Rgb<u8> = Rgb([100, 100, 100]);
const FRAME: Rgb<u8> = Rgb([210, 210, 210]);

/// One sample of a sheet.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Its picture, or several side by side (the views of one sample).
    pub images: Vec<RgbImage>,
    /// Text under it (class name, attribute list); wrapped, and cut with "…" past the lines.
    pub caption: String,
}

/// How a sheet is laid out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Layout {
    /// Cells per row (default: about square, at most 8 cells or 4 multi-view cells wide).
    pub cols: Option<usize>,
    /// Whole enlargement factor of every image (default: the least that makes the largest
    /// image [`MIN_CELL`] px, 1 for larger images, which are shrunk to [`MAX_CELL`]).
    pub scale: Option<u32>,
    /// Lines of caption under each cell.
    pub caption_lines: usize,
}

impl Default for Layout {
    fn default() -> Self {
        Layout { cols: None, scale: None, caption_lines: 2 }
    }
}

/// The side every image is drawn at (its longer side; aspect kept) for images whose longer
/// side is at most `largest` px.
pub fn image_side(largest: u32, scale: Option<u32>) -> u32 {
    let largest = largest.max(1);
    match scale {
        Some(s) => largest.saturating_mul(s.max(1)),
        None if largest < MIN_CELL => largest * MIN_CELL.div_ceil(largest),
        None => largest.min(MAX_CELL),
    }
}

/// Draws the sheet: `title` on top, `subtitle` (smaller, grey) under it, then the cells.
pub fn contact_sheet(title: &str, subtitle: &str, cells: &[Cell], layout: &Layout) -> RgbImage {
    let largest = cells.iter().flat_map(|c| &c.images).map(|i| i.width().max(i.height())).max().unwrap_or(32);
    let side = image_side(largest, layout.scale);
    let per_cell = cells.iter().map(|c| c.images.len()).max().unwrap_or(1).max(1) as u32;
    let cell_w = per_cell * side + (per_cell - 1) * GAP;
    let n = cells.len().max(1);
    let default_cols = ((n as f64).sqrt().ceil() as usize).clamp(1, if per_cell > 1 { 4 } else { 8 });
    let cols = layout.cols.unwrap_or(default_cols).clamp(1, n);
    let rows = n.div_ceil(cols) as u32;
    let cap_lines = layout.caption_lines.max(1) as u32;
    let cap_h = cap_lines * text::line_height(CAPTION_PX);
    let cell_h = side + 4 + cap_h;
    let width = (cols as u32 * (cell_w + PAD) + PAD).max(360);
    let head =
        PAD + text::line_height(TITLE_PX) + if subtitle.is_empty() { 0 } else { text::line_height(SUBTITLE_PX) } + PAD;
    let height = head + rows * (cell_h + PAD);
    let mut img = RgbImage::from_pixel(width, height, WHITE);

    let title = text::fit(title, TITLE_PX, width as f32 - 2.0 * PAD as f32);
    text::draw(&mut img, PAD as i64, PAD as i64, &title, TITLE_PX, BLACK);
    if !subtitle.is_empty() {
        let sub = text::fit(subtitle, SUBTITLE_PX, width as f32 - 2.0 * PAD as f32);
        text::draw(&mut img, PAD as i64, (PAD + text::line_height(TITLE_PX)) as i64, &sub, SUBTITLE_PX, GREY);
    }
    for (k, cell) in cells.iter().enumerate() {
        let (c, r) = ((k % cols) as u32, (k / cols) as u32);
        let (x0, y0) = (PAD + c * (cell_w + PAD), head + r * (cell_h + PAD));
        for (v, im) in cell.images.iter().enumerate() {
            let x = x0 + v as u32 * (side + GAP);
            frame(&mut img, x, y0, side);
            blit_fit(&mut img, x, y0, side, im);
        }
        let lines = text::wrap(&cell.caption, CAPTION_PX, cell_w as f32, cap_lines as usize);
        for (i, l) in lines.iter().enumerate() {
            let y = y0 + side + 3 + i as u32 * text::line_height(CAPTION_PX);
            text::draw_centred(&mut img, (x0 + cell_w / 2) as i64, y as i64, l, CAPTION_PX, BLACK);
        }
    }
    img
}

/// A light square around the `side`-sized box at `(x, y)` (shows the box of non-square images).
fn frame(img: &mut RgbImage, x: u32, y: u32, side: u32) {
    for (px, py) in (0..side).flat_map(|i| [(x + i, y), (x + i, y + side - 1), (x, y + i), (x + side - 1, y + i)]) {
        if px < img.width() && py < img.height() {
            img.put_pixel(px, py, FRAME);
        }
    }
}

/// Draws `src` into the `side`-sized box at `(x0, y0)`, aspect kept, centred: nearest
/// neighbour when enlarging, the mean of the covered source pixels when shrinking.
fn blit_fit(img: &mut RgbImage, x0: u32, y0: u32, side: u32, src: &RgbImage) {
    let (iw, ih) = (src.width().max(1), src.height().max(1));
    if src.width() == 0 || src.height() == 0 {
        return;
    }
    let scale = side as f64 / iw.max(ih) as f64;
    let (tw, th) =
        (((iw as f64 * scale).round() as u32).clamp(1, side), ((ih as f64 * scale).round() as u32).clamp(1, side));
    let (ox, oy) = (x0 + (side - tw) / 2, y0 + (side - th) / 2);
    for y in 0..th {
        let (sy0, sy1) = (y * ih / th, ((y + 1) * ih).div_ceil(th).clamp(y * ih / th + 1, ih));
        for x in 0..tw {
            let (sx0, sx1) = (x * iw / tw, ((x + 1) * iw).div_ceil(tw).clamp(x * iw / tw + 1, iw));
            let mut sum = [0u32; 3];
            for sy in sy0..sy1 {
                for sx in sx0..sx1 {
                    let p = src.get_pixel(sx, sy).0;
                    for k in 0..3 {
                        sum[k] += p[k] as u32;
                    }
                }
            }
            let n = (sy1 - sy0) * (sx1 - sx0);
            let p = Rgb(sum.map(|s| ((s + n / 2) / n) as u8));
            if ox + x < img.width() && oy + y < img.height() {
                img.put_pixel(ox + x, oy + y, p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checker(side: u32) -> RgbImage {
        RgbImage::from_fn(side, side, |x, y| if (x + y) % 2 == 0 { Rgb([255, 0, 0]) } else { Rgb([0, 0, 255]) })
    }

    #[test]
    fn small_images_are_enlarged_by_a_whole_factor_with_honest_pixels() {
        assert_eq!(image_side(32, None), 96);
        assert_eq!(image_side(28, None), 112);
        assert_eq!(image_side(96, None), 96);
        assert_eq!(image_side(500, None), MAX_CELL);
        assert_eq!(image_side(32, Some(5)), 160);
        let cells = vec![Cell { images: vec![checker(32)], caption: "x".into() }];
        let img = contact_sheet("t", "", &cells, &Layout::default());
        // Every image pixel became a 3×3 block of one colour: no blended colours inside the cell.
        let inner: Vec<Rgb<u8>> = img.pixels().copied().filter(|p| p.0[0] > 0 && p.0[2] > 0 && p.0[1] == 0).collect();
        assert!(inner.is_empty(), "{} blended pixels", inner.len());
        let red = img.pixels().filter(|p| p.0 == [255, 0, 0]).count();
        assert_eq!(red, 32 * 32 / 2 * 9);
    }

    #[test]
    fn grid_shape_follows_cols_and_views() {
        let cell = |v| Cell { images: vec![checker(32); v], caption: "automobile".into() };
        let one = contact_sheet("t", "s", &vec![cell(1); 10], &Layout { cols: Some(5), ..Layout::default() });
        let two = contact_sheet("t", "s", &vec![cell(2); 10], &Layout { cols: Some(5), ..Layout::default() });
        assert_eq!(one.width(), 5 * (96 + PAD) + PAD);
        assert_eq!(two.width(), 5 * (2 * 96 + GAP + PAD) + PAD);
        assert_eq!(one.height(), two.height());
        // Degenerate inputs draw something without panicking.
        contact_sheet("", "", &[], &Layout::default());
        contact_sheet(
            "t",
            "",
            &[Cell { images: vec![RgbImage::new(0, 0)], caption: String::new() }],
            &Layout::default(),
        );
        contact_sheet("t", "", &[cell(1)], &Layout { cols: Some(0), scale: Some(0), caption_lines: 0 });
    }
}
