/// Fills `data` with 0xFF: what a read nothing claims returns on PCI (a
/// master abort reads all ones; PCI 3.0 §6.1 has host bridges return FFFFh
/// for the Vendor ID of a function that does not exist).
func fillAllOnes(_ data: UnsafeMutableRawBufferPointer) {
    // SAFETY: indices run over 0..<data.count only.
    for i in 0..<data.count { data[i] = 0xFF }
}

/// Formats a byte count for messages: "8 GiB", "4 KiB", or bytes in hex.
func formatSize(_ size: UInt64) -> String {
    let units: [(UInt64, String)] = [(1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")]
    for (unit, name) in units where size >= unit && size % unit == 0 {
        return "\(size / unit) \(name)"
    }
    return size < 1024 ? "\(size) B" : "0x\(String(size, radix: 16)) bytes"
}
