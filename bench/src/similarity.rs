//! Word-level similarity of two extractions of the same PDF.
//!
//! Both texts go through the same `normalize_text` first (so ligatures, hyphenation and
//! whitespace do not count), then split on whitespace into words. Two measures:
//!
//! - **ordered** (the headline): page by page, `2 * LCS / (words_a + words_b)`, where LCS
//!   is the longest common subsequence of the two word sequences, summed over pages before
//!   dividing. It is difflib's `SequenceMatcher.ratio()` over words with an exact LCS, per
//!   page: missing, extra, changed *and* reordered words all lower it.
//! - **bag of words**: `2 * |A ∩ B| / (|A| + |B|)` over word multisets of the whole
//!   document (the Dice coefficient), blind to order: it shows whether the same words came
//!   out at all.

use std::collections::HashMap;

/// Matched words and total words of both sides; the ratio is `2 * matched / total`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Overlap {
    pub matched: u64,
    pub total: u64,
}

impl Overlap {
    pub fn ratio(&self) -> f64 {
        if self.total == 0 {
            return 1.0;
        }
        2.0 * self.matched as f64 / self.total as f64
    }

    pub fn add(&mut self, other: Overlap) {
        self.matched += other.matched;
        self.total += other.total;
    }
}

/// Page-aligned ordered similarity: page `i` of one side against page `i` of the other;
/// a page only one side has counts as all-unmatched.
pub fn ordered(ours: &[String], reference: &[String]) -> Overlap {
    let mut interner = Interner::default();
    let mut overlap = Overlap::default();
    for page in 0..ours.len().max(reference.len()) {
        let ours_words = interner.words(ours.get(page).map(String::as_str).unwrap_or(""));
        let reference_words = interner.words(reference.get(page).map(String::as_str).unwrap_or(""));
        overlap.add(Overlap {
            matched: lcs_length(&ours_words, &reference_words) as u64,
            total: (ours_words.len() + reference_words.len()) as u64,
        });
    }
    overlap
}

/// Order-blind similarity of the whole documents.
pub fn bag_of_words(ours: &[String], reference: &[String]) -> Overlap {
    let mut counts: HashMap<&str, i64> = HashMap::new();
    let mut ours_total = 0_u64;
    for word in ours.iter().flat_map(|page| page.split_whitespace()) {
        *counts.entry(word).or_default() += 1;
        ours_total += 1;
    }
    let mut matched = 0_u64;
    let mut reference_total = 0_u64;
    for word in reference.iter().flat_map(|page| page.split_whitespace()) {
        reference_total += 1;
        if let Some(count) = counts.get_mut(word)
            && *count > 0
        {
            *count -= 1;
            matched += 1;
        }
    }
    Overlap {
        matched,
        total: ours_total + reference_total,
    }
}

/// Words as small integers, so the LCS compares `u32`s.
#[derive(Default)]
struct Interner {
    ids: HashMap<String, u32>,
}

impl Interner {
    fn words(&mut self, text: &str) -> Vec<u32> {
        text.split_whitespace()
            .map(|word| {
                let next_id = self.ids.len() as u32;
                *self.ids.entry(word.to_string()).or_insert(next_id)
            })
            .collect()
    }
}

/// Longest common subsequence length, two rows of dynamic programming.
fn lcs_length(first: &[u32], second: &[u32]) -> usize {
    if first.is_empty() || second.is_empty() {
        return 0;
    }
    let mut previous = vec![0_u32; second.len() + 1];
    let mut current = vec![0_u32; second.len() + 1];
    for &first_word in first {
        for (column, &second_word) in second.iter().enumerate() {
            current[column + 1] = if first_word == second_word {
                previous[column] + 1
            } else {
                previous[column + 1].max(current[column])
            };
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[second.len()] as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pages(texts: &[&str]) -> Vec<String> {
        texts.iter().map(|text| text.to_string()).collect()
    }

    #[test]
    fn identical_texts_score_one() {
        let text = pages(&["a b c", "d e"]);
        assert_eq!(ordered(&text, &text).ratio(), 1.0);
        assert_eq!(bag_of_words(&text, &text).ratio(), 1.0);
    }

    #[test]
    fn reordering_lowers_only_the_ordered_measure() {
        let ours = pages(&["a b c d"]);
        let reference = pages(&["c d a b"]);
        assert_eq!(ordered(&ours, &reference).ratio(), 0.5);
        assert_eq!(bag_of_words(&ours, &reference).ratio(), 1.0);
    }

    #[test]
    fn a_missing_page_counts_as_unmatched() {
        let ours = pages(&["a b"]);
        let reference = pages(&["a b", "c d"]);
        assert_eq!(ordered(&ours, &reference).ratio(), 4.0 / 6.0);
    }
}
