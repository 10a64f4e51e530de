/// Sum of all bytes modulo 256. ACPI (ACPI 6.5 §5.2.5.3, §5.2.6) and MP
/// tables (MP spec 1.4 §4.1, §4.2) set a checksum byte so that this is zero
/// over the checksummed range.
public func byteSum<S: Sequence>(_ bytes: S) -> UInt8 where S.Element == UInt8 {
    bytes.reduce(0, &+)
}
