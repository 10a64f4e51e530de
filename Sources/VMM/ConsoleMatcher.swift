import Synchronization

/// Watches console output for `--expect` and `--fail-on` patterns. Output
/// arrives in arbitrary chunks, so matching runs on a window that keeps the
/// tail of earlier output: a pattern split across two chunks still matches,
/// as long as the text it spans is at most `window` bytes.
public final class ConsoleMatcher: Sendable {
    public enum Kind: Equatable, Sendable { case expect, failOn, panic }
    public struct Match: Equatable, Sendable { public let kind: Kind; public let pattern: String }

    public enum PatternError: Error, CustomStringConvertible {
        case invalid(option: String, pattern: String, reason: String)
        public var description: String {
            switch self {
            case let .invalid(o, p, r): return "\(o): \"\(p)\" is not a valid regular expression: \(r)"
            }
        }
    }

    /// The tail of the output so far, and whether a pattern matched.
    private let state = Mutex<(buffer: [UInt8], matched: Bool)>(([], false))
    private let window: Int
    private let patterns: [(Kind, String, Pattern)]

    /// A pattern: text to find as it is (panic messages), or a regular
    /// expression (Swift's Regex syntax, `^` and `$` at every line's ends).
    // @unchecked Sendable: a Regex is an immutable value once compiled; it is
    // only matched against, from whichever thread feeds the console.
    private enum Pattern: @unchecked Sendable {
        case literal(String)
        case regex(Regex<AnyRegexOutput>)

        func matches(_ text: String) -> Bool {
            switch self {
            case let .literal(l): return text.contains(l)
            case let .regex(r): return (try? r.firstMatch(in: text)) != nil
            }
        }
    }

    /// What Linux prints when it panics (kernel/panic.c). Seen on the console it
    /// means a guest panic even when the guest has no pvpanic driver.
    public static let linuxPanic = "Kernel panic - not syncing"

    public init(expect: [String], failOn: [String], panic: [String] = [], window: Int = 8192) throws {
        var ps: [(Kind, String, Pattern)] = []
        for p in panic { ps.append((.panic, p, .literal(p))) }
        // Failure patterns are checked first: a chunk holding both a panic and the
        // expected text is a failure.
        for (kind, option, list) in [(Kind.failOn, "--fail-on", failOn), (.expect, "--expect", expect)] {
            for p in list {
                do { ps.append((kind, p, .regex(try Regex(p).anchorsMatchLineEndings()))) } catch {
                    throw PatternError.invalid(option: option, pattern: p, reason: "\(error)")
                }
            }
        }
        patterns = ps
        self.window = window
    }

    public var isEmpty: Bool { patterns.isEmpty }

    /// Feeds a chunk; returns the first match, once.
    public func feed(_ chunk: [UInt8]) -> Match? {
        state.withLock { s in
            guard !s.matched, !patterns.isEmpty else { return nil }
            s.buffer.append(contentsOf: chunk)
            if s.buffer.count > window { s.buffer.removeFirst(s.buffer.count - window) }
            // Output often arrives a byte at a time: without a new line in the chunk
            // only the current partial line can have changed, so match just that.
            var slice = s.buffer[...]
            if !chunk.contains(0x0A), let nl = s.buffer.lastIndex(of: 0x0A) { slice = s.buffer[(nl + 1)...] }
            let text = String(decoding: slice.lazy.filter { $0 != 0x0D }, as: UTF8.self)
            for (kind, p, pattern) in patterns where pattern.matches(text) {
                s.matched = true
                return Match(kind: kind, pattern: p)
            }
            return nil
        }
    }
}
