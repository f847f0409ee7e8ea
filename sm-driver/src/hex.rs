//! Hex encoding of UTF-8 text, for metadata stored in LVM tags (which allow
//! only `A-Za-z0-9._-+/=!:&#`).

/// Lower-case hex of the text's UTF-8 bytes.
#[must_use]
pub fn encode(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The text back; invalid pairs are skipped and invalid UTF-8 replaced.
#[must_use]
pub fn decode(hex: &str) -> String {
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .filter_map(|i| hex.get(2 * i..2 * i + 2))
        .filter_map(|pair| u8::from_str_radix(pair, 16).ok())
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::{decode, encode};

    #[test]
    fn any_text_round_trips() {
        for text in ["", "plain", "données ✓ 日本語", "a,b=c\nd"] {
            assert_eq!(decode(&encode(text)), text);
            assert!(encode(text).bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }
}
