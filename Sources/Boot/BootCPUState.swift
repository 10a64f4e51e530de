/// The boot vCPU's initial register state, as plain values. The VMM copies it
/// into kvm_regs / kvm_sregs / kvm_fpu / kvm_msrs (field names follow those
/// structs in linux/arch/x86/include/uapi/asm/kvm.h). Registers not listed
/// here (rax, rcx, rdx, rdi, r8..r15, cr2, cr8) start at zero.
public struct BootCPUState: Equatable, Sendable {
    /// A segment register, as in struct kvm_segment.
    public struct Segment: Equatable, Sendable {
        public var base: UInt64
        public var limit: UInt32
        public var selector: UInt16
        /// Descriptor type field (bits 43:40), e.g. 0xB = execute/read, accessed.
        public var type: UInt8
        public var present: Bool
        public var dpl: UInt8
        /// Default operation size (D/B, bit 54).
        public var db: Bool
        /// Code/data (true) or system (false) descriptor (S, bit 44).
        public var s: Bool
        /// 64-bit code segment (L, bit 53).
        public var l: Bool
        /// Granularity: limit in 4 KiB units (G, bit 55).
        public var g: Bool
        public var avl: Bool
        /// KVM's "unusable" bit: the register holds a null selector.
        public var unusable: Bool

        public init(base: UInt64, limit: UInt32, selector: UInt16, type: UInt8, present: Bool, dpl: UInt8,
                    db: Bool, s: Bool, l: Bool, g: Bool, avl: Bool, unusable: Bool = false) {
            self.base = base
            self.limit = limit
            self.selector = selector
            self.type = type
            self.present = present
            self.dpl = dpl
            self.db = db
            self.s = s
            self.l = l
            self.g = g
            self.avl = avl
            self.unusable = unusable
        }

        /// Decodes an 8-byte segment descriptor (Intel SDM Vol. 3A 3.4.5,
        /// Figure 3-8). The limit is expanded to bytes when G is set.
        public init(descriptor d: UInt64, selector: UInt16) {
            let rawLimit = UInt32(truncatingIfNeeded: (d & 0xFFFF) | ((d >> 32) & 0xF_0000))
            let g = (d >> 55) & 1 == 1
            self.init(base: ((d >> 16) & 0xFF_FFFF) | ((d >> 32) & 0xFF00_0000),
                      limit: g ? (rawLimit << 12) | 0xFFF : rawLimit,
                      selector: selector,
                      type: UInt8(truncatingIfNeeded: (d >> 40) & 0xF),
                      present: (d >> 47) & 1 == 1,
                      dpl: UInt8(truncatingIfNeeded: (d >> 45) & 3),
                      db: (d >> 54) & 1 == 1,
                      s: (d >> 44) & 1 == 1,
                      l: (d >> 53) & 1 == 1,
                      g: g,
                      avl: (d >> 52) & 1 == 1,
                      unusable: (d >> 47) & 1 == 0)
        }

        /// A null LDT: selector 0, marked unusable (type 2 = LDT, SDM Table 3-2).
        public static let unusableLDT = Segment(base: 0, limit: 0, selector: 0, type: 2, present: false, dpl: 0,
                                                db: false, s: false, l: false, g: false, avl: false, unusable: true)
    }

    /// GDTR / IDTR (struct kvm_dtable).
    public struct DescriptorTable: Equatable, Sendable {
        public var base: UInt64
        /// Inclusive limit: size in bytes minus one.
        public var limit: UInt16
        public init(base: UInt64, limit: UInt16) {
            self.base = base
            self.limit = limit
        }
    }

    /// One MSR to set with KVM_SET_MSRS.
    public struct MSR: Equatable, Sendable {
        public var index: UInt32
        public var value: UInt64
        public init(index: UInt32, value: UInt64) {
            self.index = index
            self.value = value
        }
    }

    /// The parts of struct kvm_fpu that differ from zero.
    public struct FPU: Equatable, Sendable {
        /// x87 control word.
        public var fcw: UInt16
        public var mxcsr: UInt32
        /// fcw 0x37F is what FINIT/FNINIT loads: all x87 exceptions masked,
        /// 64-bit precision, round to nearest (Intel SDM Vol. 1 8.1.5).
        /// mxcsr 0x1F80 is the power-up value: all SIMD exceptions masked
        /// (SDM Vol. 1 10.2.3). Firecracker's setup_fpu uses the same pair.
        public static let `default` = FPU(fcw: 0x37F, mxcsr: 0x1F80)
        public init(fcw: UInt16, mxcsr: UInt32) {
            self.fcw = fcw
            self.mxcsr = mxcsr
        }
    }

    public var rip: UInt64
    public var rsp: UInt64
    public var rbp: UInt64
    public var rsi: UInt64
    public var rbx: UInt64
    public var rflags: UInt64
    public var cr0: UInt64
    public var cr3: UInt64
    public var cr4: UInt64
    public var efer: UInt64
    public var cs: Segment
    public var ds: Segment
    public var es: Segment
    public var fs: Segment
    public var gs: Segment
    public var ss: Segment
    public var tr: Segment
    public var ldt: Segment
    public var gdt: DescriptorTable
    public var idt: DescriptorTable
    public var msrs: [MSR]
    public var fpu: FPU
}

extension BootCPUState {
    /// RFLAGS bit 1 is reserved and always 1; IF, TF, VM clear (SDM Vol. 1 3.4.3).
    public static let initialRFLAGS: UInt64 = 0x2

    // Control register bits, Intel SDM Vol. 3A 2.5 / arch/x86/include/uapi/asm/processor-flags.h.
    public static let cr0PE: UInt64 = 1 << 0
    /// ET is hard-wired to 1 on every CPU since the P6.
    public static let cr0ET: UInt64 = 1 << 4
    /// Native x87 error reporting, as Linux's own CR0_STATE has it.
    public static let cr0NE: UInt64 = 1 << 5
    public static let cr0PG: UInt64 = 1 << 31
    public static let cr4PAE: UInt64 = 1 << 5
    // EFER bits, SDM Vol. 3A 2.2.1 / arch/x86/include/asm/msr-index.h.
    public static let eferLME: UInt64 = 1 << 8
    public static let eferLMA: UInt64 = 1 << 10

    /// The state the 64-bit boot protocol asks for (boot.rst "64-bit Boot
    /// Protocol"): long mode with the identity-mapped page tables, CS =
    /// __BOOT_CS (0x10), DS = ES = SS = __BOOT_DS (0x18), interrupts off, RSI =
    /// the zero page, RIP = load address + 0x200 (startup_64).
    public static func linux64(entry: UInt64, zeroPage: UInt64) -> BootCPUState {
        let code = Segment(descriptor: BootGDT.code64, selector: BootGDT.code64Selector)
        let data = Segment(descriptor: BootGDT.data, selector: BootGDT.dataSelector)
        return BootCPUState(
            rip: entry, rsp: BootLayout.bootStackPointer, rbp: BootLayout.bootStackPointer,
            rsi: zeroPage, rbx: 0, rflags: initialRFLAGS,
            cr0: cr0PE | cr0ET | cr0NE | cr0PG, cr3: BootLayout.pml4Address, cr4: cr4PAE,
            efer: eferLME | eferLMA,
            cs: code, ds: data, es: data, fs: data, gs: data, ss: data,
            tr: Segment(descriptor: BootGDT.tss, selector: BootGDT.tssSelector), ldt: .unusableLDT,
            gdt: BootGDT.register, idt: BootGDT.idtRegister,
            msrs: bootMSRs, fpu: .default)
    }

    /// The PVH entry state (xen docs/misc/pvh.pandoc, start_info.h): 32-bit
    /// protected mode, paging off; CR0 only PE (plus the read-only ET); CR4
    /// zero; flat 32-bit CS and DS/ES/SS; TR a 32-bit TSS with base 0 and
    /// limit 0x67; EBX = physical address of hvm_start_info.
    public static func pvh(entry: UInt32, startInfo: UInt64) -> BootCPUState {
        let code = Segment(descriptor: BootGDT.code32, selector: BootGDT.code32Selector)
        let data = Segment(descriptor: BootGDT.data, selector: BootGDT.dataSelector)
        return BootCPUState(
            rip: UInt64(entry), rsp: BootLayout.bootStackPointer, rbp: BootLayout.bootStackPointer,
            rsi: 0, rbx: startInfo, rflags: initialRFLAGS,
            cr0: cr0PE | cr0ET, cr3: 0, cr4: 0, efer: 0,
            cs: code, ds: data, es: data, fs: data, gs: data, ss: data,
            tr: Segment(descriptor: BootGDT.tss, selector: BootGDT.tssSelector), ldt: .unusableLDT,
            gdt: BootGDT.register, idt: BootGDT.idtRegister,
            msrs: bootMSRs, fpu: .default)
    }

    // MSR indices from arch/x86/include/asm/msr-index.h.
    public static let msrIA32SysenterCS: UInt32 = 0x174
    public static let msrIA32SysenterESP: UInt32 = 0x175
    public static let msrIA32SysenterEIP: UInt32 = 0x176
    public static let msrSTAR: UInt32 = 0xC000_0081
    public static let msrLSTAR: UInt32 = 0xC000_0082
    public static let msrCSTAR: UInt32 = 0xC000_0083
    public static let msrSyscallMask: UInt32 = 0xC000_0084
    public static let msrKernelGSBase: UInt32 = 0xC000_0102
    public static let msrIA32TSC: UInt32 = 0x10
    public static let msrIA32MiscEnable: UInt32 = 0x1A0
    /// MSR_IA32_MISC_ENABLE_FAST_STRING (bit 0): fast REP MOVS/STOS.
    public static let miscEnableFastString: UInt64 = 1 << 0
    public static let msrMTRRDefType: UInt32 = 0x2FF
    /// MTRRdefType: MTRRs enabled (bit 11), default type write-back (6)
    /// (SDM Vol. 3A 12.11.2.1); otherwise all guest RAM is uncached.
    public static let mtrrDefTypeWriteBack: UInt64 = (1 << 11) | 6

    /// MSRs every boot vCPU gets, as Firecracker's create_boot_msr_entries
    /// (arch/x86_64/msr.rs): syscall/sysenter entry points cleared, TSC 0,
    /// fast strings on, write-back default memory type.
    public static let bootMSRs: [MSR] = [
        MSR(index: msrIA32SysenterCS, value: 0),
        MSR(index: msrIA32SysenterESP, value: 0),
        MSR(index: msrIA32SysenterEIP, value: 0),
        MSR(index: msrSTAR, value: 0),
        MSR(index: msrCSTAR, value: 0),
        MSR(index: msrKernelGSBase, value: 0),
        MSR(index: msrSyscallMask, value: 0),
        MSR(index: msrLSTAR, value: 0),
        MSR(index: msrIA32TSC, value: 0),
        MSR(index: msrIA32MiscEnable, value: miscEnableFastString),
        MSR(index: msrMTRRDefType, value: mtrrDefTypeWriteBack),
    ]
}
