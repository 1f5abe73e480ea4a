//! SentencePiece-BPE tokenization from a GGUF vocabulary (`tokenizer.ggml.model = "llama"`), as
//! llama.cpp does it:
//!
//! 1. special pieces are cut out of the text first: user-defined pieces always (Gemma's runs of
//!    newlines and spaces, `\t`, ...), control pieces (`<start_of_turn>`, ...) only when the caller
//!    asks to parse special tokens; the longest pieces are cut first;
//! 2. in each remaining fragment, spaces become `▁` (with a leading `▁` where the vocabulary asks
//!    for a space prefix), the fragment starts as one symbol per character, and the adjacent pair
//!    whose concatenation is the highest-scoring piece (score = minus merge rank) is merged, the
//!    leftmost on ties, until no adjacent pair forms a piece;
//! 3. every final symbol is a piece, or a single character that is not one: that character is
//!    written as its UTF-8 bytes with the byte pieces `<0xNN>`.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use super::tokenizer::TokenKind;

/// What the vocabulary writes for a space.
const SPACE: &str = "\u{2581}";

/// A SentencePiece vocabulary with its scores.
#[derive(Debug, Clone)]
pub(crate) struct Spm {
    pieces: Vec<String>,
    scores: Vec<f32>,
    kinds: Vec<TokenKind>,
    index: HashMap<String, u32>,
    bytes: [Option<u32>; 256],
    unk: Option<u32>,
    add_space_prefix: bool,
    /// Pieces cut out before merging: (text, id, is a control piece), longest first.
    specials: Vec<(String, u32, bool)>,
}

/// A fragment of the input after the special pieces are cut out.
enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

/// One symbol of the merge loop: a byte range of the escaped text, linked to its neighbours.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge of `left` with the symbol after it into a piece of `len` bytes.
struct Candidate {
    score: f32,
    left: usize,
    len: usize,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Candidate {
    /// The heap's maximum is the highest score, then the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score.total_cmp(&other.score).then_with(|| other.left.cmp(&self.left))
    }
}

impl Spm {
    /// A vocabulary from its pieces, scores and kinds (all of one length).
    pub(crate) fn new(pieces: Vec<String>, scores: Vec<f32>, kinds: Vec<TokenKind>, unk: Option<u32>, add_space_prefix: bool) -> Self {
        let mut index = HashMap::with_capacity(pieces.len());
        let mut bytes = [None; 256];
        let mut specials = Vec::new();
        for (id, piece) in pieces.iter().enumerate() {
            let id = id as u32;
            // The first id wins when a piece is listed twice.
            index.entry(piece.clone()).or_insert(id);
            match kinds[id as usize] {
                TokenKind::Byte => {
                    if let Some(b) = parse_byte_piece(piece) {
                        bytes[b as usize].get_or_insert(id);
                    }
                }
                TokenKind::Control | TokenKind::UserDefined if !piece.is_empty() => {
                    specials.push((piece.clone(), id, kinds[id as usize] == TokenKind::Control));
                }
                _ => {}
            }
        }
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        Spm {
            pieces,
            scores,
            kinds,
            index,
            bytes,
            unk,
            add_space_prefix,
            specials,
        }
    }

    /// The number of pieces.
    pub(crate) fn len(&self) -> usize {
        self.pieces.len()
    }

    /// The id of a piece (as written in the vocabulary).
    pub(crate) fn id(&self, piece: &str) -> Option<u32> {
        self.index.get(piece).copied()
    }

    /// The piece of an id.
    pub(crate) fn piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).map(String::as_str)
    }

    /// Token ids of `text`; control pieces written in the text become their tokens only when
    /// `parse_special` is set (no BOS is added here).
    pub(crate) fn encode(&self, text: &str, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        let mut after_special = true;
        for fragment in self.partition(text, parse_special) {
            match fragment {
                Fragment::Token(id) => {
                    out.push(id);
                    after_special = true;
                }
                Fragment::Text(t) => {
                    self.encode_fragment(t, self.add_space_prefix && after_special, &mut out);
                    after_special = false;
                }
            }
        }
        out
    }

    /// Cuts the special pieces out of `text`, longest first.
    fn partition<'a>(&self, text: &'a str, parse_special: bool) -> Vec<Fragment<'a>> {
        let mut fragments = vec![Fragment::Text(text)];
        for (piece, id, control) in &self.specials {
            if (*control && !parse_special) || !text.contains(piece.as_str()) {
                continue;
            }
            let mut next = Vec::with_capacity(fragments.len() + 2);
            for fragment in fragments {
                let Fragment::Text(t) = fragment else {
                    next.push(fragment);
                    continue;
                };
                let mut last = 0;
                for (at, _) in t.match_indices(piece.as_str()) {
                    if at > last {
                        next.push(Fragment::Text(&t[last..at]));
                    }
                    next.push(Fragment::Token(*id));
                    last = at + piece.len();
                }
                if last < t.len() {
                    next.push(Fragment::Text(&t[last..]));
                }
            }
            fragments = next;
        }
        fragments
    }

    /// The merge loop over one fragment of plain text.
    fn encode_fragment(&self, raw: &str, space_prefix: bool, out: &mut Vec<u32>) {
        let mut text = String::with_capacity(raw.len() + 3);
        if space_prefix {
            text.push(' ');
        }
        text.push_str(raw);
        let text = text.replace(' ', SPACE);
        if text.is_empty() {
            return;
        }
        let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
        for (start, c) in text.char_indices() {
            let i = symbols.len();
            symbols.push(Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: None,
            });
            if i > 0 {
                symbols[i - 1].next = Some(i);
            }
        }
        let mut heap = BinaryHeap::with_capacity(symbols.len());
        let candidate = |symbols: &[Symbol], left: usize| -> Option<Candidate> {
            let right = symbols[left].next?;
            let (a, b) = (symbols[left], symbols[right]);
            let id = self.id(&text[a.start..b.start + b.len])?;
            Some(Candidate {
                score: self.scores[id as usize],
                left,
                len: a.len + b.len,
            })
        };
        for i in 0..symbols.len() {
            heap.extend(candidate(&symbols, i));
        }
        while let Some(Candidate { left, len, .. }) = heap.pop() {
            // Skip candidates made stale by an earlier merge of either side.
            let a = symbols[left];
            let Some(right) = a.next else { continue };
            let b = symbols[right];
            if a.len == 0 || b.len == 0 || a.len + b.len != len {
                continue;
            }
            symbols[left].len = len;
            symbols[left].next = b.next;
            symbols[right].len = 0;
            if let Some(n) = b.next {
                symbols[n].prev = Some(left);
            }
            if let Some(p) = a.prev {
                heap.extend(candidate(&symbols, p));
            }
            heap.extend(candidate(&symbols, left));
        }
        let mut at = Some(0);
        while let Some(i) = at {
            let s = symbols[i];
            let piece = &text[s.start..s.start + s.len];
            match self.id(piece) {
                Some(id) => out.push(id),
                None => out.extend(piece.bytes().filter_map(|b| self.bytes[b as usize].or(self.unk))),
            }
            at = s.next;
        }
    }

    /// The bytes a token stands for in text (`None`: a control, unknown or unused token, which
    /// writes nothing).
    pub(crate) fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        let piece = self.pieces.get(id as usize)?;
        match self.kinds[id as usize] {
            TokenKind::Normal => Some(piece.replace(SPACE, " ").into_bytes()),
            TokenKind::UserDefined => Some(piece.clone().into_bytes()),
            TokenKind::Byte => parse_byte_piece(piece).map(|b| vec![b]),
            TokenKind::Control | TokenKind::Unknown | TokenKind::Unused => None,
        }
    }

    /// The text of `ids` (control tokens write nothing; invalid UTF-8 is replaced).
    pub(crate) fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().filter_map(|&id| self.token_bytes(id)).flatten().collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// `<0xNN>` to its byte.
fn parse_byte_piece(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy vocabulary: bytes, a few letters and merges, a control and a user-defined piece.
    fn toy() -> Spm {
        let mut pieces = vec!["<unk>".to_string(), "<eot>".to_string(), "\n\n".to_string()];
        let mut kinds = vec![TokenKind::Unknown, TokenKind::Control, TokenKind::UserDefined];
        let mut scores = vec![0.0, 0.0, 0.0];
        for b in 0..=255u8 {
            pieces.push(format!("<0x{b:02X}>"));
            kinds.push(TokenKind::Byte);
            scores.push(0.0);
        }
        // Ranks: lower rank merges first; score = -rank.
        for (rank, p) in ["▁", "a", "b", "c", "ab", "▁ab", "bc", "abc"].iter().enumerate() {
            pieces.push(p.to_string());
            kinds.push(TokenKind::Normal);
            scores.push(-(rank as f32));
        }
        Spm::new(pieces, scores, kinds, Some(0), false)
    }

    fn pieces(spm: &Spm, ids: &[u32]) -> Vec<String> {
        ids.iter().map(|&i| spm.piece(i).unwrap().to_string()).collect()
    }

    #[test]
    fn merges_by_score_and_falls_back_to_bytes() {
        let spm = toy();
        // "ab" (rank 4) merges before "bc" (rank 6); then "▁ab" (rank 5) before "abc" (rank 7).
        assert_eq!(pieces(&spm, &spm.encode(" abc", false)), ["▁ab", "c"]);
        assert_eq!(pieces(&spm, &spm.encode("abc", false)), ["abc"]);
        // "é" is not a piece: its two UTF-8 bytes.
        assert_eq!(pieces(&spm, &spm.encode("aé", false)), ["a", "<0xC3>", "<0xA9>"]);
        assert_eq!(spm.decode(&spm.encode(" abc aé", false)), " abc aé");
    }

    #[test]
    fn special_pieces_are_cut_out() {
        let spm = toy();
        assert_eq!(pieces(&spm, &spm.encode("a\n\nb", false)), ["a", "\n\n", "b"]);
        assert_eq!(pieces(&spm, &spm.encode("a<eot>", true)), ["a", "<eot>"]);
        // Not parsed: the control piece's text is tokenized as text.
        assert!(!spm.encode("a<eot>", false).contains(&1));
        assert_eq!(spm.decode(&spm.encode("ab<eot>", true)), "ab");
    }
}
