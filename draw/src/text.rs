//! Anti-aliased text in the embedded DejaVu Sans: measuring, drawing (left to right, or
//! rotated to read upwards for a y-axis label), and fitting to a width — cut with "…" or
//! wrapped onto lines at spaces, `_` and `-`.

use std::sync::OnceLock;

use ab_glyph::{point, Font, FontRef, PxScale, ScaleFont};
use image::{Rgb, RgbImage};

/// DejaVu Sans, cut to the characters siamlab draws (`tools/subset_font.sh`).
static FONT_BYTES: &[u8] = include_bytes!("../fonts/DejaVuSans-subset.ttf");

fn font() -> &'static FontRef<'static> {
    static FONT: OnceLock<FontRef<'static>> = OnceLock::new();
    // The bytes are compiled in and checked by the tests: parsing cannot fail at run time.
    FONT.get_or_init(|| FontRef::try_from_slice(FONT_BYTES).expect("the embedded font parses"))
}

/// Characters the font lacks are drawn as this.
const MISSING: char = '?';

fn glyph_id(ch: char) -> ab_glyph::GlyphId {
    let f = font();
    let id = f.glyph_id(ch);
    if id.0 == 0 && !ch.is_whitespace() {
        f.glyph_id(MISSING)
    } else {
        id
    }
}

/// Height of a line of text at `size` px (ascent + descent + line gap), rounded up.
pub fn line_height(size: f32) -> u32 {
    let s = font().as_scaled(PxScale::from(size));
    (s.ascent() - s.descent() + s.line_gap()).ceil().max(1.0) as u32
}

/// Width in pixels of `text` at `size` px, kerning included.
pub fn width(text: &str, size: f32) -> f32 {
    let s = font().as_scaled(PxScale::from(size));
    let mut w = 0.0;
    let mut prev = None;
    for ch in text.chars() {
        let id = glyph_id(ch);
        if let Some(p) = prev {
            w += s.kern(p, id);
        }
        w += s.h_advance(id);
        prev = Some(id);
    }
    w
}

/// Coverage mask of `text` at `size` px: `(width, height, coverage row by row in [0, 1])`,
/// `height` = [`line_height`], the baseline at the ascent.
fn mask(text: &str, size: f32) -> (usize, usize, Vec<f32>) {
    let f = font();
    let scale = PxScale::from(size);
    let s = f.as_scaled(scale);
    let w = width(text, size).ceil().max(0.0) as usize + 2;
    let h = line_height(size) as usize;
    let mut m = vec![0f32; w * h];
    let mut x = 0.0;
    let mut prev = None;
    for ch in text.chars() {
        let id = glyph_id(ch);
        if let Some(p) = prev {
            x += s.kern(p, id);
        }
        let g = id.with_scale_and_position(scale, point(x, s.ascent()));
        x += s.h_advance(id);
        prev = Some(id);
        if let Some(o) = f.outline_glyph(g) {
            let b = o.px_bounds();
            o.draw(|gx, gy, c| {
                let (px, py) = (b.min.x as i64 + gx as i64, b.min.y as i64 + gy as i64);
                if (0..w as i64).contains(&px) && (0..h as i64).contains(&py) {
                    let v = &mut m[py as usize * w + px as usize];
                    *v = (*v + c).min(1.0);
                }
            });
        }
    }
    (w, h, m)
}

/// Blends colour `c` into pixel `(x, y)` with coverage `a`; pixels outside the image are dropped.
fn blend(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>, a: f32) {
    if a <= 0.0 || !(0..img.width() as i64).contains(&x) || !(0..img.height() as i64).contains(&y) {
        return;
    }
    let p = img.get_pixel_mut(x as u32, y as u32);
    for k in 0..3 {
        p.0[k] = (p.0[k] as f32 * (1.0 - a) + c.0[k] as f32 * a).round() as u8;
    }
}

/// Draws `text` at `size` px with the top-left corner of its line box at `(x, y)`.
pub fn draw(img: &mut RgbImage, x: i64, y: i64, text: &str, size: f32, c: Rgb<u8>) {
    let (w, h, m) = mask(text, size);
    for my in 0..h {
        for mx in 0..w {
            blend(img, x + mx as i64, y + my as i64, c, m[my * w + mx]);
        }
    }
}

/// Draws `text` centred on column `cx`, its line box starting at row `y`.
pub fn draw_centred(img: &mut RgbImage, cx: i64, y: i64, text: &str, size: f32, c: Rgb<u8>) {
    draw(img, cx - (width(text, size) / 2.0).round() as i64, y, text, size, c);
}

/// Draws `text` rotated a quarter turn counter-clockwise (reading upwards): the line box's
/// left edge is column `x`, the text starts at row `y` and runs up.
pub fn draw_up(img: &mut RgbImage, x: i64, y: i64, text: &str, size: f32, c: Rgb<u8>) {
    let (w, h, m) = mask(text, size);
    for my in 0..h {
        for mx in 0..w {
            blend(img, x + my as i64, y - mx as i64, c, m[my * w + mx]);
        }
    }
}

/// `text` if it fits in `max_width` px at `size`, else as much of it as fits followed by "…".
pub fn fit(text: &str, size: f32, max_width: f32) -> String {
    if width(text, size) <= max_width {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    let mut n = chars.len();
    while n > 0 {
        let cut: String = chars[..n].iter().collect::<String>().trim_end().to_string() + "…";
        if width(&cut, size) <= max_width {
            return cut;
        }
        n -= 1;
    }
    String::new()
}

/// `text` broken into at most `max_lines` lines of at most `max_width` px at `size`: breaks
/// after spaces, `_`, `-` and `,` (a word longer than a line is broken anywhere); what does not
/// fit on the last line is cut with "…".
pub fn wrap(text: &str, size: f32, max_width: f32, max_lines: usize) -> Vec<String> {
    let max_lines = max_lines.max(1);
    // Pieces that end at a break opportunity.
    let mut pieces: Vec<String> = Vec::new();
    let mut cur = String::new();
    for ch in text.chars() {
        cur.push(ch);
        if matches!(ch, ' ' | '_' | '-' | ',' | '/') {
            pieces.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        pieces.push(cur);
    }
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    let mut i = 0;
    while i < pieces.len() {
        let candidate = format!("{line}{}", pieces[i]);
        if width(candidate.trim_end(), size) <= max_width {
            line = candidate;
            i += 1;
            continue;
        }
        if line.is_empty() {
            // One piece wider than a line: break it after the last character that fits.
            let chars: Vec<char> = pieces[i].chars().collect();
            let prefix = |n: usize| chars[..n].iter().collect::<String>();
            let n = (1..chars.len()).rev().find(|&n| width(&prefix(n), size) <= max_width).unwrap_or(1);
            lines.push(prefix(n));
            pieces[i] = chars[n..].iter().collect();
        } else {
            lines.push(line.trim_end().to_string());
            line.clear();
        }
        if lines.len() == max_lines {
            break;
        }
    }
    if i >= pieces.len() {
        if !line.trim().is_empty() {
            lines.push(line.trim_end().to_string());
        }
        return lines;
    }
    // Out of lines: the last one takes the rest, cut with "…".
    let rest: String = pieces[i..].concat();
    let last = lines.pop().unwrap_or_default();
    lines.push(fit(&format!("{last} {rest}"), size, max_width));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_font_has_what_the_pictures_draw() {
        for ch in "Az09 %()[]{}.,:;!?+-=/_'\"#·±×≤≥≈→…–—µ²é".chars() {
            assert!(ch == ' ' || font().glyph_id(ch).0 != 0, "{ch:?} missing");
        }
        assert!(width("loss", 14.0) > 20.0 && width("loss", 14.0) < 40.0);
        assert!(width("WWW", 14.0) > width("iii", 14.0));
        assert_eq!(width("", 14.0), 0.0);
        // A character outside the subset is drawn as '?', not skipped.
        assert_eq!(width("中", 14.0), width("?", 14.0));
    }

    #[test]
    fn draws_anti_aliased_grey_levels() {
        let mut img = RgbImage::from_pixel(80, 30, Rgb([255, 255, 255]));
        draw(&mut img, 2, 2, "kNN 91%", 16.0, Rgb([0, 0, 0]));
        let levels: std::collections::BTreeSet<u8> = img.pixels().map(|p| p.0[0]).collect();
        assert!(levels.len() > 20, "{} grey levels", levels.len());
        assert!(img.pixels().any(|p| p.0[0] < 40));
        // Drawing off the image is clipped, not a panic.
        draw(&mut img, -500, 900, "x", 16.0, Rgb([0, 0, 0]));
        draw_up(&mut img, 70, 5, "long text upwards", 16.0, Rgb([0, 0, 0]));
    }

    #[test]
    fn fit_and_wrap_cut_deliberately() {
        assert_eq!(fit("cat", 13.0, 100.0), "cat");
        let cut = fit("automobile transporter", 13.0, 60.0);
        assert!(cut.ends_with('…') && width(&cut, 13.0) <= 60.0, "{cut}");
        assert_eq!(fit("anything", 13.0, 1.0), "");
        let lines = wrap("aquarium_fish", 13.0, 70.0, 2);
        assert_eq!(lines, ["aquarium_", "fish"]);
        let lines = wrap("Arched Eyebrows, Attractive, Brown Hair, Mouth Slightly Open, Smiling", 13.0, 96.0, 3);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines.iter().all(|l| width(l, 13.0) <= 96.0), "{lines:?}");
        assert!(lines[2].ends_with('…'), "{lines:?}");
        assert_eq!(wrap("dog", 13.0, 96.0, 2), ["dog"]);
        let long = wrap("Supercalifragilisticexpialidocious", 13.0, 60.0, 2);
        assert_eq!(long.len(), 2);
        assert!(long.iter().all(|l| width(l, 13.0) <= 60.0), "{long:?}");
    }
}
