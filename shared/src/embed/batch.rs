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

/// Splits texts whose lengths are `sorted_lengths` (ascending) into contiguous ranges
/// of at most `max_texts` texts each, whose padded size (texts times the longest) stays
/// within `max_padded_tokens`.
///
/// The budget bounds the activations of one forward pass (and with it the worker's
/// memory) whatever the chunk size; a text longer than the budget gets a range of its own.
pub(crate) fn padded_batches(
    sorted_lengths: &[usize],
    max_texts: usize,
    max_padded_tokens: usize,
) -> Vec<Range<usize>> {
    let max_texts = max_texts.max(1);
    let mut ranges = Vec::new();
    let mut start = 0;
    for (index, &length) in sorted_lengths.iter().enumerate() {
        let texts_with_this_one = index - start + 1;
        let over_budget = texts_with_this_one * length.max(1) > max_padded_tokens;
        if index > start && (texts_with_this_one > max_texts || over_budget) {
            ranges.push(start..index);
            start = index;
        }
    }
    if start < sorted_lengths.len() {
        ranges.push(start..sorted_lengths.len());
    }
    ranges
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
    fn padded_batches_respect_the_text_count() {
        assert_eq!(
            padded_batches(&[5; 70], 32, usize::MAX),
            vec![0..32, 32..64, 64..70]
        );
    }

    #[test]
    fn padded_batches_respect_the_token_budget() {
        // 4 texts of 10 fit 40 tokens; the 20s fit two at a time.
        assert_eq!(
            padded_batches(&[10, 10, 10, 10, 20, 20, 20], 32, 40),
            vec![0..4, 4..6, 6..7]
        );
    }

    #[test]
    fn padded_batches_give_an_oversized_text_its_own_batch() {
        assert_eq!(
            padded_batches(&[3, 300, 400], 32, 100),
            vec![0..1, 1..2, 2..3]
        );
        assert!(padded_batches(&[], 32, 100).is_empty());
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
