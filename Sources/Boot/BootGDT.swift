/// The boot GDT and the empty IDT, shared by the 64-bit and the PVH entry.
public enum BootGDT {
    /// Flat 4 GiB 32-bit code: G=1, D=1, P=1, S=1, type 0xB (execute/read,
    /// accessed). Used by the PVH entry (CS "must be a 32-bit read/execute code
    /// segment with a base of 0 and a limit of 0xFFFFFFFF").
    public static let code32: UInt64 = 0x00CF_9B00_0000_FFFF
    /// 64-bit code, __BOOT_CS: G=1, L=1, D=0, P=1, S=1, type 0xB.
    public static let code64: UInt64 = 0x00AF_9B00_0000_FFFF
    /// Flat 4 GiB data, __BOOT_DS: G=1, B=1, P=1, S=1, type 0x3 (read/write, accessed).
    public static let data: UInt64 = 0x00CF_9300_0000_FFFF
    /// TSS: base 0, limit 0x67 (104-byte TSS, SDM Vol. 3A 9.7), P=1, S=0,
    /// type 0xB (busy TSS). In long mode the descriptor is 16 bytes (SDM 9.2.3);
    /// the upper half (base bits 63:32) is the zero entry after it.
    public static let tss: UInt64 = 0x0000_8B00_0000_0067

    public static let code32Selector: UInt16 = 0x08
    /// boot.rst: "__BOOT_CS(0x10)".
    public static let code64Selector: UInt16 = 0x10
    /// boot.rst: "__BOOT_DS(0x18)".
    public static let dataSelector: UInt16 = 0x18
    public static let tssSelector: UInt16 = 0x20

    /// Entries in selector order; index = selector / 8.
    public static let entries: [UInt64] = [0, code32, code64, data, tss, 0]

    /// Little-endian bytes written at `BootLayout.gdtAddress`.
    public static var bytes: [UInt8] {
        var w = ByteWriter()
        for entry in entries { w.append(entry) }
        return w.bytes
    }

    public static let register = BootCPUState.DescriptorTable(
        base: BootLayout.gdtAddress, limit: UInt16(entries.count * 8 - 1))

    /// The IDT is empty: any exception before the kernel loads its own IDT
    /// triple-faults, which KVM reports as a shutdown exit.
    public static let idtRegister = BootCPUState.DescriptorTable(base: BootLayout.idtAddress, limit: 0)
    /// Zero bytes written at the IDT address (one 16-byte long-mode gate).
    public static let idtBytes = 16
}
