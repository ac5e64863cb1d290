//! SmolLM2's byte-level BPE tokenizer, built from the GGUF's own vocabulary and merges, with
//! the pre-tokenizer llama.cpp calls `smollm` (digits split one by one, then GPT-2's split).

use std::collections::HashMap;
use std::sync::OnceLock;

use super::LocalError;
use regex::Regex;

/// Token type of control tokens (`<|im_start|>`, ...) in GGUF's `tokenizer.ggml.token_type`.
const CONTROL: i32 = 3;

/// Encodes text to token ids and back.
pub struct Tokenizer {
    vocab: HashMap<String, u32>,
    tokens: Vec<String>,
    ranks: HashMap<(String, String), u32>,
    /// Control tokens, longest first, matched literally in text before BPE.
    specials: Vec<(String, u32)>,
    byte_to_char: [char; 256],
    char_to_byte: HashMap<char, u8>,
}

impl Tokenizer {
    /// From GGUF's `tokenizer.ggml.tokens`, `tokenizer.ggml.token_type` and `tokenizer.ggml.merges`.
    pub fn new(tokens: Vec<String>, token_types: &[i32], merges: &[String]) -> Result<Self, LocalError> {
        let vocab = tokens.iter().enumerate().map(|(id, token)| (token.clone(), id as u32)).collect();
        let mut ranks = HashMap::with_capacity(merges.len());
        for (rank, merge) in merges.iter().enumerate() {
            let (left, right) = merge.split_once(' ').ok_or_else(|| format!("malformed merge `{merge}`"))?;
            ranks.insert((left.to_owned(), right.to_owned()), rank as u32);
        }
        let mut specials: Vec<(String, u32)> = tokens
            .iter()
            .enumerate()
            .filter(|(id, _)| token_types.get(*id) == Some(&CONTROL))
            .map(|(id, token)| (token.clone(), id as u32))
            .collect();
        specials.sort_by_key(|(token, _)| std::cmp::Reverse(token.len()));
        let byte_to_char = bytes_to_unicode();
        let char_to_byte = byte_to_char.iter().enumerate().map(|(b, &c)| (c, b as u8)).collect();
        Ok(Self { vocab, tokens, ranks, specials, byte_to_char, char_to_byte })
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The id of a token, as spelled in the vocabulary (`<|im_end|>`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.vocab.get(token).copied()
    }

    /// Token ids of `text`; control tokens written in the text become their ids.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let next_special = self
                .specials
                .iter()
                .filter_map(|(token, id)| rest.find(token.as_str()).map(|at| (at, token.len(), *id)))
                .min_by_key(|&(at, len, _)| (at, std::cmp::Reverse(len)));
            match next_special {
                Some((at, len, id)) => {
                    self.encode_ordinary(&rest[..at], &mut ids);
                    ids.push(id);
                    rest = &rest[at + len..];
                }
                None => {
                    self.encode_ordinary(rest, &mut ids);
                    break;
                }
            }
        }
        ids
    }

    fn encode_ordinary(&self, text: &str, ids: &mut Vec<u32>) {
        for piece in pre_tokenize(text) {
            let mapped: String = piece.bytes().map(|b| self.byte_to_char[b as usize]).collect();
            self.bpe(&mapped, ids);
        }
    }

    /// Merges the characters of one pre-token by rank, lowest first.
    fn bpe(&self, word: &str, ids: &mut Vec<u32>) {
        let mut symbols: Vec<String> = word.chars().map(String::from).collect();
        while symbols.len() > 1 {
            let best = symbols
                .windows(2)
                .enumerate()
                .filter_map(|(i, pair)| self.ranks.get(&(pair[0].clone(), pair[1].clone())).map(|&rank| (rank, i)))
                .min();
            let Some((_, i)) = best else { break };
            let right = symbols.remove(i + 1);
            symbols[i].push_str(&right);
        }
        for symbol in symbols {
            match self.vocab.get(&symbol) {
                Some(&id) => ids.push(id),
                // Every byte has a token in a byte-level vocabulary; this is a malformed one.
                None => ids.extend(symbol.chars().filter_map(|c| self.vocab.get(&c.to_string()).copied())),
            }
        }
    }

    /// The text of `ids`; control tokens are written as they are spelled.
    pub fn decode(&self, ids: &[u32]) -> String {
        String::from_utf8_lossy(&self.decode_bytes(ids)).into_owned()
    }

    /// The raw bytes of `ids` (a token may end inside a UTF-8 character).
    pub fn decode_bytes(&self, ids: &[u32]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for &id in ids {
            let Some(token) = self.tokens.get(id as usize) else { continue };
            if self.specials.iter().any(|(_, special)| *special == id) {
                bytes.extend_from_slice(token.as_bytes());
                continue;
            }
            for c in token.chars() {
                match self.char_to_byte.get(&c) {
                    Some(&b) => bytes.push(b),
                    None => bytes.extend_from_slice(c.to_string().as_bytes()),
                }
            }
        }
        bytes
    }

    /// The text of one token, as bytes.
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        self.decode_bytes(&[id])
    }
}

/// Splits text as the `smollm` pre-tokenizer does: every digit alone, then GPT-2's pattern
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
pub fn pre_tokenize(text: &str) -> Vec<&str> {
    static DIGIT: OnceLock<Regex> = OnceLock::new();
    static GPT2: OnceLock<Regex> = OnceLock::new();
    let digit = DIGIT.get_or_init(|| Regex::new(r"\p{N}").expect("valid pattern"));
    let gpt2 = GPT2.get_or_init(|| {
        Regex::new(r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+").expect("valid pattern")
    });
    let mut pieces = Vec::new();
    let mut start = 0;
    for m in digit.find_iter(text) {
        split_gpt2(gpt2, &text[start..m.start()], &mut pieces);
        pieces.push(m.as_str());
        start = m.end();
    }
    split_gpt2(gpt2, &text[start..], &mut pieces);
    pieces
}

/// GPT-2's split; `\s+(?!\S)` (no look-ahead in this regex engine) is done by giving back
/// the last character of a whitespace run that is followed by something else.
fn split_gpt2<'a>(gpt2: &Regex, text: &'a str, pieces: &mut Vec<&'a str>) {
    let mut at = 0;
    while at < text.len() {
        let Some(m) = gpt2.find_at(text, at) else {
            pieces.push(&text[at..]);
            break;
        };
        let mut end = m.end();
        let piece = m.as_str();
        if piece.chars().all(char::is_whitespace) && end < text.len() {
            let last = piece.chars().next_back().map_or(0, char::len_utf8);
            if piece.len() > last {
                end -= last;
            }
        }
        pieces.push(&text[m.start()..end]);
        at = end;
    }
}

/// GPT-2's reversible map from bytes to printable characters.
fn bytes_to_unicode() -> [char; 256] {
    let mut map = ['\0'; 256];
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut extra = 0;
    for b in 0..256u32 {
        map[b as usize] = if printable(b) {
            char::from_u32(b).expect("latin-1")
        } else {
            extra += 1;
            char::from_u32(255 + extra).expect("valid code point")
        };
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_tokenizer_splits_like_gpt2_with_single_digits() {
        assert_eq!(pre_tokenize("Hello world"), ["Hello", " world"]);
        assert_eq!(pre_tokenize("add 12 and 3.5"), ["add", " ", "1", "2", " and", " ", "3", ".", "5"]);
        assert_eq!(pre_tokenize("don't  stop\n\nnow "), ["don", "'t", " ", " stop", "\n", "\n", "now", " "]);
        assert_eq!(pre_tokenize("a  \nb"), ["a", "  ", "\n", "b"]);
        assert_eq!(pre_tokenize("{\"x\": 2}"), ["{\"", "x", "\":", " ", "2", "}"]);
    }

    #[test]
    fn bytes_map_is_a_bijection() {
        let map = bytes_to_unicode();
        let unique: std::collections::HashSet<_> = map.iter().collect();
        assert_eq!(unique.len(), 256);
        assert_eq!(map[b' ' as usize], 'Ġ');
        assert_eq!(map[b'\n' as usize], 'Ċ');
    }

    #[test]
    fn merges_by_rank_and_round_trips() {
        let mut tokens: Vec<String> = vec!["<|endoftext|>".into(), "<|im_start|>".into()];
        tokens.extend(bytes_to_unicode().iter().map(std::string::ToString::to_string));
        tokens.extend(["he", "ll", "hell", "Ġw", "o"].map(String::from));
        let types: Vec<i32> = (0..tokens.len()).map(|i| if i < 2 { 3 } else { 1 }).collect();
        let merges: Vec<String> = ["l l", "h e", "he ll"].map(String::from).to_vec();
        let tokenizer = Tokenizer::new(tokens, &types, &merges).unwrap();
        let ids = tokenizer.encode("<|im_start|>hello w");
        let hell = tokenizer.token_id("hell").unwrap();
        assert_eq!(ids[0], 1);
        assert_eq!(ids[1], hell);
        assert_eq!(tokenizer.decode(&ids), "<|im_start|>hello w");
    }
}
