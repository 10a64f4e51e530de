/// A fixed-width text field of a firmware table (ACPI signatures and OEM IDs,
/// MP table OEM and bus type strings): the UTF-8 bytes of `text`, cut or
/// padded with spaces (0x20) to exactly `width` bytes. Meant for the
/// caller's own constants, which are ASCII.
public func asciiField(_ text: String, width: Int) -> [UInt8] {
    var field = Array(text.utf8.prefix(width))
    field.append(contentsOf: [UInt8](repeating: 0x20, count: width - field.count))
    return field
}
