//! Turning guest bytes into text for payloads.

/// Decode at most `max` bytes as UTF-8 without splitting a character; returns the text and whether bytes were left out.
///
/// The cut moves back to the start of a character the limit would split, so the result
/// never ends in a replacement character the file does not contain (reference bug §11.20).
/// Bytes that are not UTF-8 at all are decoded lossily, so a binary file still reads.
pub fn truncate_utf8(bytes: &[u8], max: usize) -> (String, bool) {
    if bytes.len() <= max {
        return (String::from_utf8_lossy(bytes).into_owned(), false);
    }
    let cut = char_boundary_at_or_before(bytes, max);
    (String::from_utf8_lossy(&bytes[..cut]).into_owned(), true)
}

/// The largest cut `<= max` that does not fall inside a well-formed multibyte character.
fn char_boundary_at_or_before(bytes: &[u8], max: usize) -> usize {
    let is_continuation = |b: u8| b & 0b1100_0000 == 0b1000_0000;
    // A UTF-8 character is at most 4 bytes, so its lead byte is at most 3 bytes back.
    let mut start = max;
    while start > 0 && max - start < 3 && is_continuation(bytes[start]) {
        start -= 1;
    }
    if start == max || is_continuation(bytes[start]) {
        // The limit is on a boundary, or there is no lead byte nearby (not UTF-8 here).
        return max;
    }
    let len = match bytes[start] {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => 1,
    };
    // Only back off when the character really spans the limit; otherwise the bytes at the
    // limit are stray continuation bytes and cutting earlier would drop valid text.
    let whole = start + len <= bytes.len() && std::str::from_utf8(&bytes[start..start + len]).is_ok();
    if whole && start + len > max {
        start
    } else {
        max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_input_is_returned_whole() {
        assert_eq!(truncate_utf8(b"hello", 5), ("hello".to_string(), false));
        assert_eq!(truncate_utf8(b"", 0), (String::new(), false));
    }

    #[test]
    fn never_splits_a_character() {
        let s = "aé€😀z"; // 1 + 2 + 3 + 4 + 1 bytes
        let b = s.as_bytes();
        let expect =
            [(0, ""), (1, "a"), (2, "a"), (3, "aé"), (4, "aé"), (5, "aé"), (6, "aé€"), (9, "aé€"), (10, "aé€😀")];
        for (max, want) in expect {
            let (text, cut) = truncate_utf8(b, max);
            assert_eq!(text, want, "max={max}");
            assert!(cut);
            assert!(!text.contains('\u{FFFD}'));
        }
        assert_eq!(truncate_utf8(b, 11), (s.to_string(), false));
    }

    #[test]
    fn invalid_bytes_are_lossy_not_an_error() {
        let (text, cut) = truncate_utf8(&[b'a', 0xFF, 0x80, 0x80, 0x80, b'b'], 4);
        assert!(cut);
        assert_eq!(text, "a\u{FFFD}\u{FFFD}\u{FFFD}");
        // A lone lead byte at the limit's edge is not a character to protect.
        let (text, _) = truncate_utf8(&[b'a', 0xE2, b'b', b'c'], 2);
        assert_eq!(text, "a\u{FFFD}");
    }
}
