/// Runs `body` on a zeroed uAPI struct with a flexible array tail
/// (`kvm_cpuid2`, `kvm_msrs`, `kvm_irq_routing`): `header` (with its count
/// field already set) followed by room for `count` entries, in one Swift
/// allocation freed when `body` returns. The one place these structs get
/// their size; shim.c asserts each header is 8 bytes, so the entries start
/// right after it, as in C.
func withFlexibleArray<Header, Entry, R>(
    _ header: Header, count: Int, of _: Entry.Type,
    _ body: (UnsafeMutablePointer<Header>, UnsafeMutableBufferPointer<Entry>) throws -> R
) rethrows -> R {
    let entryOffset = MemoryLayout<Header>.size
    precondition(entryOffset % MemoryLayout<Entry>.alignment == 0, "flexible array entries must follow the header unpadded")
    let byteCount = entryOffset + max(count, 0) * MemoryLayout<Entry>.stride
    let raw = UnsafeMutableRawPointer.allocate(byteCount: byteCount,
                                               alignment: max(MemoryLayout<Header>.alignment, MemoryLayout<Entry>.alignment))
    defer { raw.deallocate() }
    // SAFETY: `raw` holds byteCount bytes: the header at 0, `count` entries at
    // entryOffset (aligned, checked above); the two bindings do not overlap.
    raw.initializeMemory(as: UInt8.self, repeating: 0, count: byteCount)
    let h = raw.bindMemory(to: Header.self, capacity: 1)
    h.pointee = header
    let e = raw.advanced(by: entryOffset).bindMemory(to: Entry.self, capacity: max(count, 0))
    return try body(h, UnsafeMutableBufferPointer(start: e, count: max(count, 0)))
}
