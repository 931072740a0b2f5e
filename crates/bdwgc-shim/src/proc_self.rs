//! The kernel's text files about this process (`/proc/self/maps`,
//! `/proc/self/smaps`), read with plain system calls into buffers on the
//! stack: nothing is allocated, so hooks and set-up may read them.

use core::ffi::CStr;

/// The longest line handed on whole; the rest of a longer line (a long
/// file name) is cut, which no reader here needs.
const LINE_MAX: usize = 256;

/// Calls `each` with every line of the file at `path`, without its newline;
/// returns false when the file cannot be opened.
pub fn for_each_line(path: &CStr, mut each: impl FnMut(&[u8])) -> bool {
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return false;
    }
    let mut buffer = [0u8; 4096];
    let mut line = [0u8; LINE_MAX];
    let mut len = 0;
    loop {
        // SAFETY: reads at most the buffer's length into it.
        let n = unsafe { libc::read(fd, buffer.as_mut_ptr().cast(), buffer.len()) };
        if n <= 0 {
            break;
        }
        for &byte in &buffer[..n as usize] {
            if byte == b'\n' {
                each(&line[..len]);
                len = 0;
            } else if len < LINE_MAX {
                line[len] = byte;
                len += 1;
            }
        }
    }
    if len > 0 {
        each(&line[..len]);
    }
    // SAFETY: `fd` is ours.
    unsafe { libc::close(fd) };
    true
}

/// The address range a maps or smaps line describes (`start-end ...` in
/// hexadecimal), or `None` for any other line.
pub fn mapping_range(line: &[u8]) -> Option<(usize, usize)> {
    let (start, rest) = hex_prefix(line)?;
    let (end, rest) = hex_prefix(rest.strip_prefix(b"-")?)?;
    (rest.first() == Some(&b' ') && start <= end).then_some((start, end))
}

/// The number of a field line of smaps or status, such as `Rss:   120 kB`
/// (in kB) or `Threads: 3`, when the line is that field.
pub fn number_field(line: &[u8], name: &[u8]) -> Option<usize> {
    let rest = line.strip_prefix(name)?.strip_prefix(b":")?;
    // (`trim_ascii_start` needs Rust 1.80; the crate supports 1.77.)
    let spaces = rest.iter().take_while(|b| b.is_ascii_whitespace()).count();
    let digits = &rest[spaces..];
    let len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    if len == 0 || len > 15 {
        return None;
    }
    Some(
        digits[..len]
            .iter()
            .fold(0, |n, &d| n * 10 + usize::from(d - b'0')),
    )
}

/// How many threads the process has now, `None` when the kernel does not
/// say.
pub fn thread_count() -> Option<usize> {
    let mut threads = None;
    for_each_line(c"/proc/self/status", |line| {
        threads = threads.or_else(|| number_field(line, b"Threads"));
    });
    threads
}

fn hex_prefix(text: &[u8]) -> Option<(usize, &[u8])> {
    let len = text.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if len == 0 || len > 16 {
        return None;
    }
    let value = text[..len].iter().fold(0usize, |n, &d| {
        let digit = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => d - b'A' + 10,
        };
        (n << 4) | usize::from(digit)
    });
    Some((value, &text[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_lines_give_their_range() {
        assert_eq!(
            mapping_range(b"55d1c2a4e000-55d1c2a50000 r--p 00000000 fe:01 123 /usr/bin/cat"),
            Some((0x55d1c2a4e000, 0x55d1c2a50000))
        );
        assert_eq!(mapping_range(b"Rss:                 120 kB"), None);
        assert_eq!(mapping_range(b"VmFlags: rd wr mr mw me ac sd"), None);
        assert_eq!(mapping_range(b"2000-1000 r--p"), None);
        assert_eq!(mapping_range(b""), None);
    }

    #[test]
    fn fields_give_their_number() {
        assert_eq!(
            number_field(b"Rss:                 120 kB", b"Rss"),
            Some(120)
        );
        assert_eq!(number_field(b"Rss:                 120 kB", b"Pss"), None);
        assert_eq!(number_field(b"Rss_Anon: 3 kB", b"Rss"), None);
        assert_eq!(number_field(b"Rss: kB", b"Rss"), None);
        assert_eq!(number_field(b"Threads:\t3", b"Threads"), Some(3));
    }

    #[test]
    fn this_process_counts_its_threads() {
        extern crate std;
        assert!(thread_count() >= Some(1));
        // (Other tests' threads come and go meanwhile: at least these two.)
        let (started, stop) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
        std::thread::scope(|scope| {
            scope.spawn(|| {
                started.wait();
                stop.wait();
            });
            started.wait();
            assert!(thread_count() >= Some(2));
            stop.wait();
        });
    }

    #[test]
    fn this_process_has_maps_lines() {
        let mut mappings = 0;
        assert!(for_each_line(c"/proc/self/maps", |line| {
            mappings += usize::from(mapping_range(line).is_some())
        }));
        assert!(mappings > 3);
        assert!(!for_each_line(c"/proc/self/no-such-file", |_| {}));
    }
}
