/// The data bytes of a port I/O or MMIO exit: a bounds-checked window into
/// the vCPU's kvm_run page, valid until the vCPU runs again. The exit handler
/// loads from it (writes) and stores into it (reads); the window's address
/// never leaves this module, and every access is checked against its size,
/// which `VCPUExit.decode` already bounded by the run page.
public struct ExitData: Equatable {
    private let window: UnsafeMutableRawBufferPointer

    /// `window` must stay valid as long as the value is used: the run page of
    /// the vCPU until its next `run()`, or a test's buffer.
    init(_ window: UnsafeMutableRawBufferPointer) { self.window = window }

    /// How many bytes the exit carries (port I/O: size * count; MMIO: 1 to 8).
    public var count: Int { window.count }

    /// A copy of the bytes.
    public var bytes: [UInt8] { Array(window) }

    /// Copies the bytes at `offset ..< offset + destination.count` into
    /// `destination`; false, and nothing copied, if that range is not inside
    /// the data.
    @discardableResult
    public func load(from offset: Int, into destination: UnsafeMutableRawBufferPointer) -> Bool {
        guard let range = range(offset, destination.count) else { return false }
        // SAFETY: `range` lies inside `window` (checked), `destination` has range.count bytes.
        destination.copyMemory(from: UnsafeRawBufferPointer(rebasing: window[range]))
        return true
    }

    /// Stores `source` at `offset`; false, and nothing stored, if it does not
    /// fit inside the data.
    @discardableResult
    public func store(_ source: UnsafeRawBufferPointer, at offset: Int = 0) -> Bool {
        guard let range = range(offset, source.count) else { return false }
        // SAFETY: `range` lies inside `window` (checked) and has source.count bytes.
        UnsafeMutableRawBufferPointer(rebasing: window[range]).copyMemory(from: source)
        return true
    }

    /// Stores `bytes` at `offset`; false, and nothing stored, if they do not fit.
    @discardableResult
    public func store(_ bytes: [UInt8], at offset: Int = 0) -> Bool {
        bytes.withUnsafeBytes { store($0, at: offset) }
    }

    private func range(_ offset: Int, _ length: Int) -> Range<Int>? {
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard offset >= 0, length >= 0, !overflow, end <= window.count else { return nil }
        return offset..<end
    }

    /// Equal when the bytes are (two windows onto different memory can be).
    public static func == (a: ExitData, b: ExitData) -> Bool { a.bytes == b.bytes }
}
