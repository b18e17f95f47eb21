//! Pure helpers that decide how texts are grouped into batches and requests.

use std::ops::Range;

/// Indices of `lengths`, shortest first; equal lengths keep input order.
///
/// Batching texts of similar length means less padding, so less wasted compute.
pub(crate) fn shortest_first(lengths: &[usize]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&index| lengths[index]);
    order
}

/// Rough token count of a text when no tokenizer is at hand: one token per 3 bytes.
///
/// English averages about 4 bytes per token with OpenAI tokenizers, so this errs on
/// the side of smaller requests. Never returns 0, so empty texts still count.
pub(crate) fn estimate_tokens(text: &str) -> usize {
    text.len().div_ceil(3).max(1)
}

/// Splits `texts` into contiguous ranges of at most `max_inputs` texts whose estimated
/// tokens sum to at most `max_tokens`.
///
/// A single text above `max_tokens` gets a range of its own: it cannot be split here,
/// and the server decides whether it fits.
pub(crate) fn request_ranges(
    texts: &[String],
    max_inputs: usize,
    max_tokens: usize,
) -> Vec<Range<usize>> {
    let max_inputs = max_inputs.max(1);
    let mut ranges = Vec::new();
    let mut start = 0;
    let mut tokens_in_range = 0;
    for (index, text) in texts.iter().enumerate() {
        let tokens = estimate_tokens(text);
        let range_is_full =
            index - start >= max_inputs || (index > start && tokens_in_range + tokens > max_tokens);
        if range_is_full {
            ranges.push(start..index);
            start = index;
            tokens_in_range = 0;
        }
        tokens_in_range += tokens;
    }
    if start < texts.len() {
        ranges.push(start..texts.len());
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(lengths: &[usize]) -> Vec<String> {
        lengths.iter().map(|&length| "a".repeat(length)).collect()
    }

    #[test]
    fn shortest_first_is_stable() {
        assert_eq!(shortest_first(&[5, 1, 5, 0]), vec![3, 1, 0, 2]);
        assert!(shortest_first(&[]).is_empty());
    }

    #[test]
    fn ranges_respect_input_count() {
        let ranges = request_ranges(&texts(&[3; 600]), 256, usize::MAX);
        assert_eq!(ranges, vec![0..256, 256..512, 512..600]);
    }

    #[test]
    fn ranges_respect_token_budget() {
        // 30 bytes is 10 estimated tokens each.
        let ranges = request_ranges(&texts(&[30, 30, 30, 30, 30]), 100, 25);
        assert_eq!(ranges, vec![0..2, 2..4, 4..5]);
    }

    #[test]
    fn oversized_text_gets_its_own_range() {
        let ranges = request_ranges(&texts(&[3, 300, 3]), 100, 10);
        assert_eq!(ranges, vec![0..1, 1..2, 2..3]);
    }

    #[test]
    fn no_texts_no_ranges() {
        assert!(request_ranges(&[], 10, 10).is_empty());
    }
}
