//! Splitting a byte stream into frames, independent of where the bytes come
//! from (a program's standard output for the `command` source).
//!
//! This module owns the two framings a program can write: an MJPEG stream
//! (JPEG images back to back, [`MjpegSplitter`]) and raw frames of a fixed
//! size ([`RawSplitter`]). Both take bytes as they arrive (a frame may be
//! split across any number of reads, several frames may come in one read)
//! and hand out whole frames; both bound what they hold.
//!
//! MJPEG framing walks the JPEG structure instead of searching for the EOI
//! bytes: marker segments are skipped by their length (so an EXIF thumbnail,
//! with its own SOI/EOI, stays inside its frame), entropy-coded data is
//! scanned for the next marker (`FF 00` stuffing and restart markers skipped).
//! Bytes outside a frame (garbage, a program's banner) are discarded up to
//! the next SOI. A frame that grows past the bound is dropped and the
//! splitter looks for the next SOI.

/// What [`MjpegSplitter::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Split {
    /// A complete JPEG image, SOI to EOI.
    Frame(Vec<u8>),
    /// A frame grew past the bound after this many bytes and was dropped.
    Oversized(usize),
}

/// Where the MJPEG scan stands in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Looking for an SOI; nothing in the buffer belongs to a frame yet.
    Seek,
    /// Inside a frame (which starts at buffer offset 0), at a marker.
    Marker(usize),
    /// Inside a frame, in entropy-coded data.
    Entropy(usize),
}

/// Splits an MJPEG byte stream into JPEG images. See the module documentation.
#[derive(Debug)]
pub(crate) struct MjpegSplitter {
    buf: Vec<u8>,
    scan: Scan,
    max: usize,
    /// Bytes discarded outside frames (garbage, truncated frames).
    discarded: u64,
}

impl MjpegSplitter {
    /// A splitter that drops frames longer than `max` bytes.
    pub(crate) fn new(max: usize) -> MjpegSplitter {
        MjpegSplitter {
            buf: Vec::new(),
            scan: Scan::Seek,
            max,
            discarded: 0,
        }
    }

    /// Append bytes read from the stream.
    pub(crate) fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes discarded so far outside any frame.
    #[cfg(test)]
    pub(crate) fn discarded(&self) -> u64 {
        self.discarded
    }

    /// Bytes held (a partial frame, or up to two bytes of a possible SOI).
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len()
    }

    fn discard(&mut self, n: usize) {
        self.buf.drain(..n);
        self.discarded += n as u64;
    }

    /// The next complete frame (or dropped oversized one) in what was
    /// pushed; `None` when more bytes are needed.
    pub(crate) fn next(&mut self) -> Option<Split> {
        loop {
            let len = self.buf.len();
            match self.scan {
                Scan::Seek => {
                    match self.buf.windows(3).position(|w| w == [0xFF, 0xD8, 0xFF]) {
                        Some(i) => {
                            self.discard(i);
                            self.scan = Scan::Marker(2);
                        }
                        None => {
                            // Keep a possible SOI cut by the read boundary.
                            self.discard(len.saturating_sub(2));
                            return None;
                        }
                    }
                }
                Scan::Marker(p) => {
                    if p + 1 >= len {
                        return self.need_more(p);
                    }
                    if self.buf[p] != 0xFF {
                        // Not JPEG structure: drop what was taken for a frame.
                        self.resync();
                        continue;
                    }
                    let m = self.buf[p + 1];
                    match m {
                        // Fill byte before a marker.
                        0xFF => self.scan = Scan::Marker(p + 1),
                        0xD9 => {
                            if p + 2 > self.max {
                                // Whole, but over the bound all the same.
                                self.resync();
                                return Some(Split::Oversized(p + 2));
                            }
                            let rest = self.buf.split_off(p + 2);
                            let frame = std::mem::replace(&mut self.buf, rest);
                            self.scan = Scan::Seek;
                            return Some(Split::Frame(frame));
                        }
                        // A new SOI before this frame ended: it was truncated.
                        0xD8 => {
                            self.discard(p);
                            self.scan = Scan::Marker(2);
                        }
                        // Markers without a length.
                        0x01 | 0xD0..=0xD7 => self.scan = Scan::Marker(p + 2),
                        _ => {
                            if p + 3 >= len {
                                return self.need_more(p);
                            }
                            let seg =
                                usize::from(u16::from_be_bytes([self.buf[p + 2], self.buf[p + 3]]));
                            if seg < 2 {
                                self.resync();
                                continue;
                            }
                            let next = p + 2 + seg;
                            self.scan = if m == 0xDA {
                                Scan::Entropy(next)
                            } else {
                                Scan::Marker(next)
                            };
                        }
                    }
                }
                Scan::Entropy(p) => {
                    let Some(i) = self
                        .buf
                        .get(p..)
                        .and_then(|b| b.iter().position(|&b| b == 0xFF))
                    else {
                        // Everything up to the end is entropy data.
                        let at = len.max(p);
                        self.scan = Scan::Entropy(at);
                        return self.need_more(at);
                    };
                    let i = p + i;
                    if i + 1 >= len {
                        self.scan = Scan::Entropy(i);
                        return self.need_more(i);
                    }
                    match self.buf[i + 1] {
                        // Stuffed 0xFF, restart markers: still entropy data.
                        0x00 | 0xD0..=0xD7 => self.scan = Scan::Entropy(i + 2),
                        0xFF => self.scan = Scan::Entropy(i + 1),
                        _ => self.scan = Scan::Marker(i),
                    }
                }
            }
        }
    }

    /// The scan needs bytes past `at`: fine unless the frame so far is
    /// already over the bound, in which case it is dropped.
    fn need_more(&mut self, at: usize) -> Option<Split> {
        let size = self.buf.len().max(at);
        if size <= self.max {
            return None;
        }
        self.resync();
        Some(Split::Oversized(size))
    }

    /// Give up on the frame at the start of the buffer: look for the next SOI
    /// after its own.
    fn resync(&mut self) {
        self.discard(2.min(self.buf.len()));
        self.scan = Scan::Seek;
    }
}

/// Splits a stream of raw frames of `frame_len` bytes each.
#[derive(Debug)]
pub(crate) struct RawSplitter {
    buf: Vec<u8>,
    frame_len: usize,
}

impl RawSplitter {
    pub(crate) fn new(frame_len: usize) -> RawSplitter {
        RawSplitter {
            buf: Vec::with_capacity(frame_len),
            frame_len,
        }
    }

    /// Append bytes read from the stream.
    pub(crate) fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes held (at most one frame and one read).
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole frame, if one has arrived.
    pub(crate) fn next(&mut self) -> Option<Vec<u8>> {
        if self.buf.len() < self.frame_len {
            return None;
        }
        let mut rest = Vec::with_capacity(self.frame_len);
        rest.extend_from_slice(&self.buf[self.frame_len..]);
        self.buf.truncate(self.frame_len);
        Some(std::mem::replace(&mut self.buf, rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small JPEG with a marker segment whose payload holds SOI and EOI
    /// bytes (as an EXIF thumbnail does) and entropy data with a stuffed
    /// 0xFF and a restart marker.
    fn jpeg(tag: u8) -> Vec<u8> {
        let mut j = vec![0xFF, 0xD8];
        // APP1 with an embedded "thumbnail" SOI…EOI.
        j.extend_from_slice(&[0xFF, 0xE1, 0x00, 0x08, 0xFF, 0xD8, 0xFF, 0xD9, tag, 0x00]);
        // SOS header (length 3: one byte of payload), then entropy data.
        j.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x03, 0x00]);
        j.extend_from_slice(&[0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56, tag]);
        j.extend_from_slice(&[0xFF, 0xD9]);
        j
    }

    fn frames(s: &mut MjpegSplitter) -> Vec<Split> {
        std::iter::from_fn(|| s.next()).collect()
    }

    // Would catch splitting on the first FF D9 (inside the thumbnail or
    // entropy data) or losing frames when several arrive in one read.
    #[test]
    fn splits_back_to_back_frames_on_structure_not_on_bytes() {
        let mut s = MjpegSplitter::new(1 << 20);
        let mut stream = jpeg(1);
        stream.extend(jpeg(2));
        s.push(&stream);
        assert_eq!(
            frames(&mut s),
            vec![Split::Frame(jpeg(1)), Split::Frame(jpeg(2))]
        );
        assert_eq!(s.buffered(), 0);
    }

    // Would catch a frame lost or corrupted when a read boundary falls
    // anywhere inside it (marker, length, stuffing, EOI).
    #[test]
    fn frames_split_across_reads_at_every_offset_come_out_whole() {
        let mut stream = b"banner\n".to_vec();
        stream.extend(jpeg(7));
        stream.extend(jpeg(8));
        for cut in 0..stream.len() {
            let mut s = MjpegSplitter::new(1 << 20);
            s.push(&stream[..cut]);
            let mut got = frames(&mut s);
            s.push(&stream[cut..]);
            got.extend(frames(&mut s));
            assert_eq!(
                got,
                vec![Split::Frame(jpeg(7)), Split::Frame(jpeg(8))],
                "cut at {cut}"
            );
        }
    }

    // Would catch garbage between frames (or a truncated frame followed by a
    // new SOI) corrupting the next frame or stopping the splitter.
    #[test]
    fn garbage_and_truncated_frames_are_discarded() {
        let mut s = MjpegSplitter::new(1 << 20);
        let mut stream = b"\xFF\xFFjunk\xFF".to_vec();
        stream.extend(jpeg(1));
        stream.extend(b"more junk \xFF\xD8 not a frame");
        // A frame cut short (no EOI), then a whole one.
        stream.extend(&jpeg(2)[..12]);
        stream.extend(jpeg(3));
        s.push(&stream);
        assert_eq!(
            frames(&mut s),
            vec![Split::Frame(jpeg(1)), Split::Frame(jpeg(3))]
        );
        assert!(s.discarded() > 0);
    }

    // Would catch an unbounded buffer (a stream that never ends its frame)
    // or a splitter that stops after dropping an oversized frame.
    #[test]
    fn oversized_frame_is_dropped_and_the_stream_resyncs() {
        let mut s = MjpegSplitter::new(64);
        let mut big = vec![0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02];
        big.extend(std::iter::repeat_n(0x11, 200));
        big.extend([0xFF, 0xD9]);
        let mut got = Vec::new();
        for chunk in big.chunks(16) {
            s.push(chunk);
            got.extend(frames(&mut s));
            assert!(s.buffered() <= 64 + 16, "holds {} bytes", s.buffered());
        }
        s.push(&jpeg(5));
        got.extend(frames(&mut s));
        assert!(matches!(got[0], Split::Oversized(n) if n > 64), "{got:?}");
        assert_eq!(got.last(), Some(&Split::Frame(jpeg(5))));
        assert_eq!(got.len(), 2, "{got:?}");
        // The same frame arriving whole in one read is dropped too.
        s.push(&big);
        s.push(&jpeg(6));
        assert_eq!(
            frames(&mut s),
            vec![Split::Oversized(big.len()), Split::Frame(jpeg(6))]
        );
    }

    // Would catch raw frames being cut at read boundaries instead of at
    // exactly the frame length.
    #[test]
    fn raw_frames_are_exactly_frame_len_bytes() {
        let mut s = RawSplitter::new(10);
        let data: Vec<u8> = (0..35).collect();
        let mut got = Vec::new();
        for chunk in data.chunks(7) {
            s.push(chunk);
            while let Some(f) = s.next() {
                got.push(f);
            }
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[2], (20..30).collect::<Vec<u8>>());
        assert_eq!(s.buffered(), 5);
    }
}
