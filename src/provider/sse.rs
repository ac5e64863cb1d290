//! Server-sent events, as a Chat Completions stream sends them: the `data:` of each event out
//! of a byte stream that may split anywhere. Lines end in `\n`, `\r\n` or a bare `\r`; an
//! event's `data:` lines are joined with `\n` and end at a blank line; comments and other
//! fields are skipped. Servers that send one `data:` line per event with no blank line between
//! are read too: a `data:` line that follows a complete JSON value starts a new event.

/// Reads events from bytes as they arrive.
#[derive(Debug, Default)]
pub(crate) struct SseReader {
    buffer: Vec<u8>,
    data: Option<String>,
}

impl SseReader {
    /// Takes the next bytes; returns the data of every event they complete, in order.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i < self.buffer.len() {
            let byte = self.buffer[i];
            if byte != b'\n' && byte != b'\r' {
                i += 1;
                continue;
            }
            // A `\r` at the end may be the first half of `\r\n`: wait for the next bytes.
            if byte == b'\r' && i + 1 == self.buffer.len() {
                break;
            }
            let line = String::from_utf8_lossy(&self.buffer[start..i]).into_owned();
            i += if byte == b'\r' && self.buffer[i + 1] == b'\n' { 2 } else { 1 };
            start = i;
            self.line(&line, &mut events);
        }
        self.buffer.drain(..start);
        events
    }

    /// The end of the stream: the last line and an event still open are complete.
    pub(crate) fn finish(&mut self) -> Vec<String> {
        let rest = std::mem::take(&mut self.buffer);
        let mut events = Vec::new();
        if !rest.is_empty() {
            let line = String::from_utf8_lossy(&rest).trim_end_matches('\r').to_owned();
            self.line(&line, &mut events);
        }
        events.extend(self.data.take());
        events
    }

    fn line(&mut self, line: &str, events: &mut Vec<String>) {
        if line.is_empty() {
            events.extend(self.data.take());
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some(("", _)) => return, // a comment
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        if field != "data" {
            return;
        }
        match &mut self.data {
            Some(data) if is_complete(data) => {
                events.push(std::mem::replace(data, value.to_owned()));
            }
            Some(data) => {
                data.push('\n');
                data.push_str(value);
            }
            None => self.data = Some(value.to_owned()),
        }
    }
}

/// Whether `data` is a whole event already: `[DONE]` or a complete JSON value.
fn is_complete(data: &str) -> bool {
    data == "[DONE]" || serde_json::from_str::<serde::de::IgnoredAny>(data).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pieces: &[&[u8]]) -> Vec<String> {
        let mut reader = SseReader::default();
        let mut events: Vec<String> = pieces.iter().flat_map(|p| reader.feed(p)).collect();
        events.extend(reader.finish());
        events
    }

    #[test]
    fn events_end_at_blank_lines_whatever_the_line_endings() {
        for text in [
            "data: {\"a\":1}\n\ndata: [DONE]\n\n",
            "data: {\"a\":1}\r\n\r\ndata: [DONE]\r\n\r\n",
            "data: {\"a\":1}\r\rdata: [DONE]\r\r",
        ] {
            assert_eq!(read(&[text.as_bytes()]), ["{\"a\":1}", "[DONE]"], "{text:?}");
            // Split at every byte: the same events.
            let bytes = text.as_bytes();
            let pieces: Vec<&[u8]> = bytes.chunks(1).collect();
            assert_eq!(read(&pieces), ["{\"a\":1}", "[DONE]"], "{text:?} byte by byte");
        }
    }

    /// Property: whatever the line endings and wherever the bytes are split, the events read
    /// are the events written. 2,000 random streams, each cut at random points.
    #[test]
    fn any_split_of_any_stream_reads_the_same_events() {
        let mut state = 42u64;
        let mut next = |bound: u64| {
            state = crate::rng::mix64(state.wrapping_add(0x9E37_79B9_7F4A_7C15));
            state % bound
        };
        for _ in 0..2000 {
            let count = 1 + next(6);
            let events: Vec<String> =
                (0..count).map(|i| format!("{{\"n\":{i},\"text\":\"{}\"}}", "x".repeat(next(20) as usize))).collect();
            let end = ["\n", "\r\n", "\r"][next(3) as usize];
            let mut text = String::new();
            for event in &events {
                if next(4) == 0 {
                    text.push_str(&format!(": comment{end}"));
                }
                text.push_str(&format!("data: {event}{end}{end}"));
            }
            let bytes = text.as_bytes();
            let mut cuts: Vec<usize> = (0..next(8)).map(|_| next(bytes.len() as u64 + 1) as usize).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut from = 0;
            for cut in cuts {
                pieces.push(&bytes[from..cut]);
                from = cut;
            }
            pieces.push(&bytes[from..]);
            assert_eq!(read(&pieces), events, "{text:?} cut into {} pieces", pieces.len());
        }
    }

    #[test]
    fn multi_line_data_is_joined() {
        assert_eq!(read(&[b"data: {\"a\":\ndata: 1}\n\n"]), ["{\"a\":\n1}"]);
    }

    #[test]
    fn comments_and_other_fields_are_skipped_and_lines_without_blank_lines_still_split() {
        assert_eq!(
            read(&[b": ping\nevent: x\nid: 3\ndata: {\"a\":1}\ndata: {\"b\":2}\ndata: [DONE]\n"]),
            ["{\"a\":1}", "{\"b\":2}", "[DONE]"]
        );
    }
}
