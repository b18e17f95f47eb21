//! Reading order from character boxes: the page's layout decides, so columns read as columns.
//!
//! pdfium hands characters in content-stream order, with generated spaces and line breaks. That order is
//! right inside a line and usually inside a paragraph, but a page may draw its columns, table cells or
//! margin notes in any order. So:
//! 1. **Fragments**: consecutive characters on one baseline, split where pdfium breaks the line or where a
//!    horizontal gap is wider than [`FRAGMENT_GAP`] character heights (a column gutter, a table cell).
//! 2. **Blocks**: each fragment joins the block before it when it is the next line of it (just below,
//!    overlapping horizontally, similar size); otherwise it starts a block.
//! 3. **Order**: recursive XY cuts over block boxes. A vertical gap that no block crosses splits the
//!    group into columns, read left to right; failing that, the first horizontal gap splits off the band
//!    above it, read first; failing both, content order.
//!
//! Time is linear in the characters for steps 1 and 2; step 3 sorts blocks per cut and falls back to
//! content order beyond [`MAX_ORDERED_BLOCKS`] blocks, so a hostile page cannot make it quadratic.

/// One character with its box in PDF points (y grows upwards).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayoutChar {
    pub character: char,
    pub left: f32,
    pub right: f32,
    pub bottom: f32,
    pub top: f32,
}

/// A horizontal gap wider than this many character heights ends a fragment.
const FRAGMENT_GAP: f32 = 1.2;
/// A gap wider than this many heights between characters reads as a space.
const SPACE_GAP: f32 = 0.15;
/// Beyond this many blocks on a page, content order is kept (no sorting).
const MAX_ORDERED_BLOCKS: usize = 2_000;
/// How many recent blocks a fragment may continue.
const RECENT_BLOCKS: usize = 8;
/// Deepest nesting of cuts.
const MAX_CUT_DEPTH: usize = 48;

#[derive(Debug, Clone, Copy)]
struct BoundingBox {
    left: f32,
    right: f32,
    bottom: f32,
    top: f32,
}

impl BoundingBox {
    fn of(character: &LayoutChar) -> BoundingBox {
        BoundingBox {
            left: character.left.min(character.right),
            right: character.right.max(character.left),
            bottom: character.bottom.min(character.top),
            top: character.top.max(character.bottom),
        }
    }

    fn height(&self) -> f32 {
        (self.top - self.bottom).max(0.1)
    }

    fn extend(&mut self, other: &BoundingBox) {
        self.left = self.left.min(other.left);
        self.right = self.right.max(other.right);
        self.bottom = self.bottom.min(other.bottom);
        self.top = self.top.max(other.top);
    }

    fn vertical_overlap(&self, other: &BoundingBox) -> f32 {
        self.top.min(other.top) - self.bottom.max(other.bottom)
    }

    fn horizontal_overlap(&self, other: &BoundingBox) -> f32 {
        self.right.min(other.right) - self.left.max(other.left)
    }
}

struct Fragment {
    text: String,
    bounds: BoundingBox,
    /// Height of its characters (the tallest).
    height: f32,
}

struct Block {
    lines: Vec<String>,
    bounds: BoundingBox,
    last_line: BoundingBox,
    height: f32,
}

/// The page's text in reading order: blocks separated by a blank line, lines by a line break.
pub fn page_text(characters: &[LayoutChar]) -> String {
    let fragments = fragments(characters);
    let blocks = blocks(fragments);
    let mut order = Vec::with_capacity(blocks.len());
    if blocks.len() > MAX_ORDERED_BLOCKS {
        order.extend(0..blocks.len());
    } else {
        order_blocks((0..blocks.len()).collect(), &blocks, &mut order, 0);
    }
    let mut text = String::new();
    for index in order {
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(&blocks[index].lines.join("\n"));
    }
    text
}

fn fragments(characters: &[LayoutChar]) -> Vec<Fragment> {
    let mut fragments: Vec<Fragment> = Vec::new();
    let mut current: Option<Fragment> = None;
    let mut pending_space = false;
    for character in characters {
        match character.character {
            '\r' | '\n' => {
                fragments.extend(current.take());
                pending_space = false;
                continue;
            }
            other if other.is_whitespace() => {
                pending_space = true;
                continue;
            }
            // pdfium marks a hyphen that breaks a word at a line end as U+0002; a soft hyphen
            // there is the same thing. Both become '-', which `normalize_text` joins across
            // the line break ("exam-\nple" → "example").
            '\u{2}' | '\u{AD}' => {}
            other if other.is_control() => continue,
            _ => {}
        }
        let visible = match character.character {
            '\u{2}' | '\u{AD}' => '-',
            other => other,
        };
        let bounds = BoundingBox::of(character);
        let height = bounds.height();
        if let Some(fragment) = current.as_mut() {
            let reference_height = fragment.height.max(height);
            let gap = bounds.left - fragment.bounds.right;
            let same_line = bounds.vertical_overlap(&fragment.bounds)
                >= 0.3 * fragment.height.min(height)
                && gap > -FRAGMENT_GAP * reference_height;
            if same_line && gap <= FRAGMENT_GAP * reference_height {
                if pending_space || gap > SPACE_GAP * reference_height {
                    fragment.text.push(' ');
                }
                fragment.text.push(visible);
                fragment.bounds.extend(&bounds);
                fragment.height = reference_height;
                pending_space = false;
                continue;
            }
            fragments.extend(current.take());
        }
        current = Some(Fragment {
            text: visible.to_string(),
            bounds,
            height,
        });
        pending_space = false;
    }
    fragments.extend(current);
    fragments
}

fn blocks(fragments: Vec<Fragment>) -> Vec<Block> {
    let mut blocks: Vec<Block> = Vec::new();
    for fragment in fragments {
        // The few most recent blocks: a page drawn row by row across columns alternates between them.
        let recent_start = blocks.len().saturating_sub(RECENT_BLOCKS);
        let continued = blocks[recent_start..]
            .iter_mut()
            .rev()
            .find(|block| continues(block, &fragment));
        if let Some(block) = continued {
            block.lines.push(fragment.text);
            block.bounds.extend(&fragment.bounds);
            block.last_line = fragment.bounds;
            continue;
        }
        blocks.push(Block {
            lines: vec![fragment.text],
            bounds: fragment.bounds,
            last_line: fragment.bounds,
            height: fragment.height,
        });
    }
    blocks
}

/// Whether `fragment` is the next line of `block`: just below its last line, overlapping it
/// horizontally, in a similar size.
fn continues(block: &Block, fragment: &Fragment) -> bool {
    let previous = block.last_line;
    let line_gap = previous.bottom - fragment.bounds.top;
    let similar_size =
        fragment.height <= block.height * 1.3 + 0.5 && block.height <= fragment.height * 1.3 + 0.5;
    let next_line = line_gap > -0.5 * fragment.height && line_gap < 1.0 * block.height;
    let overlapping = fragment.bounds.horizontal_overlap(&previous) > 0.0;
    next_line && overlapping && similar_size
}

/// Appends `group` to `order` in reading order (see the module doc).
fn order_blocks(group: Vec<usize>, blocks: &[Block], order: &mut Vec<usize>, depth: usize) {
    let mut rest = group;
    loop {
        if rest.len() <= 1 || depth >= MAX_CUT_DEPTH {
            rest.sort_unstable();
            order.extend(rest);
            return;
        }
        if let Some(columns) = vertical_split(&rest, blocks) {
            for column in columns {
                order_blocks(column, blocks, order, depth + 1);
            }
            return;
        }
        match first_horizontal_split(&rest, blocks) {
            Some((band, remainder)) => {
                order_blocks(band, blocks, order, depth + 1);
                rest = remainder;
            }
            None => {
                rest.sort_unstable();
                order.extend(rest);
                return;
            }
        }
    }
}

/// Columns: groups separated by vertical gaps that no block crosses, left to right.
fn vertical_split(group: &[usize], blocks: &[Block]) -> Option<Vec<Vec<usize>>> {
    let mut sorted = group.to_vec();
    sorted.sort_by(|left, right| {
        blocks[*left]
            .bounds
            .left
            .total_cmp(&blocks[*right].bounds.left)
    });
    let minimum_gap = 0.3 * typical_height(group, blocks);
    let mut columns: Vec<Vec<usize>> = vec![Vec::new()];
    let mut right_edge = f32::NEG_INFINITY;
    for index in sorted {
        let bounds = blocks[index].bounds;
        let current = columns.last_mut().expect("columns starts non-empty");
        if !current.is_empty() && bounds.left > right_edge + minimum_gap {
            columns.push(vec![index]);
        } else {
            current.push(index);
        }
        right_edge = right_edge.max(bounds.right);
    }
    (columns.len() > 1).then_some(columns)
}

/// The band above the topmost horizontal gap no block crosses, and the rest below it.
fn first_horizontal_split(group: &[usize], blocks: &[Block]) -> Option<(Vec<usize>, Vec<usize>)> {
    let mut sorted = group.to_vec();
    sorted.sort_by(|upper, lower| {
        blocks[*lower]
            .bounds
            .top
            .total_cmp(&blocks[*upper].bounds.top)
    });
    let mut bottom_edge = f32::INFINITY;
    for (position, index) in sorted.iter().enumerate() {
        let bounds = blocks[*index].bounds;
        if position > 0 && bounds.top < bottom_edge {
            let remainder = sorted.split_off(position);
            return Some((sorted, remainder));
        }
        bottom_edge = bottom_edge.min(bounds.bottom);
    }
    None
}

fn typical_height(group: &[usize], blocks: &[Block]) -> f32 {
    let total: f32 = group.iter().map(|index| blocks[*index].height).sum();
    (total / group.len().max(1) as f32).max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Characters of `text` on one line starting at (x, baseline), 10 pt high, 5 pt wide, then a line break.
    fn line(text: &str, x: f32, baseline: f32) -> Vec<LayoutChar> {
        let mut characters: Vec<LayoutChar> = text
            .chars()
            .enumerate()
            .map(|(position, character)| LayoutChar {
                character,
                left: x + position as f32 * 5.0,
                right: x + position as f32 * 5.0 + 4.5,
                bottom: baseline,
                top: baseline + 10.0,
            })
            .collect();
        characters.push(LayoutChar {
            character: '\n',
            left: 0.0,
            right: 0.0,
            bottom: 0.0,
            top: 0.0,
        });
        characters
    }

    #[test]
    fn two_columns_drawn_row_by_row_read_as_columns() {
        let mut characters = Vec::new();
        characters.extend(line("Title across the page", 100.0, 700.0));
        for row in 0..4 {
            let baseline = 670.0 - row as f32 * 12.0;
            characters.extend(line(&format!("left line {row}"), 50.0, baseline));
            characters.extend(line(&format!("right line {row}"), 320.0, baseline));
        }
        let text = page_text(&characters);
        assert_eq!(
            text,
            "Title across the page\n\nleft line 0\nleft line 1\nleft line 2\nleft line 3\n\nright line 0\nright line 1\nright line 2\nright line 3"
        );
    }

    #[test]
    fn gutter_without_line_break_still_splits() {
        // pdfium may put both columns' lines on one "line": the gap splits them.
        let mut characters = line("alpha beta", 50.0, 600.0);
        characters.pop();
        characters.extend(line("gamma delta", 320.0, 600.0));
        characters.extend(line("epsilon", 50.0, 588.0));
        let text = page_text(&characters);
        assert_eq!(text, "alpha beta\nepsilon\n\ngamma delta");
    }

    #[test]
    fn many_blocks_keep_content_order_in_linear_time() {
        let mut characters = Vec::new();
        for index in 0..(MAX_ORDERED_BLOCKS + 10) {
            // Scattered single characters, each its own block.
            characters.extend(line(
                "x",
                (index % 50) as f32 * 40.0,
                (index / 50) as f32 * 40.0,
            ));
        }
        let started = std::time::Instant::now();
        let text = page_text(&characters);
        assert_eq!(text.matches('x').count(), MAX_ORDERED_BLOCKS + 10);
        assert!(started.elapsed().as_secs() < 5);
    }
}
