import CShim
import HostSys

/// Segment register state (struct kvm_segment), as plain values.
public struct SegmentState: Equatable, Sendable {
    public var base: UInt64, limit: UInt32, selector: UInt16
    public var type: UInt8, present: UInt8, dpl: UInt8, db: UInt8, s: UInt8, l: UInt8, g: UInt8, avl: UInt8
    public var unusable: UInt8

    public init(base: UInt64, limit: UInt32, selector: UInt16, type: UInt8, present: UInt8, dpl: UInt8, db: UInt8, s: UInt8, l: UInt8, g: UInt8, avl: UInt8, unusable: UInt8 = 0) {
        self.base = base; self.limit = limit; self.selector = selector; self.type = type; self.present = present
        self.dpl = dpl; self.db = db; self.s = s; self.l = l; self.g = g; self.avl = avl; self.unusable = unusable
    }

    var kvm: kvm_segment {
        var k = kvm_segment()
        k.base = base; k.limit = limit; k.selector = selector; k.type = type; k.present = present
        k.dpl = dpl; k.db = db; k.s = s; k.l = l; k.g = g; k.avl = avl; k.unusable = unusable
        return k
    }
}

/// The special registers SwiftVMM sets at boot.
public struct SpecialRegisters: Equatable, Sendable {
    public var cs, ds, es, fs, gs, ss, tr, ldt: SegmentState
    public var gdtBase: UInt64, gdtLimit: UInt16
    public var idtBase: UInt64, idtLimit: UInt16
    public var cr0, cr3, cr4, efer: UInt64

    public init(cs: SegmentState, ds: SegmentState, es: SegmentState, fs: SegmentState, gs: SegmentState, ss: SegmentState, tr: SegmentState, ldt: SegmentState, gdtBase: UInt64, gdtLimit: UInt16, idtBase: UInt64, idtLimit: UInt16, cr0: UInt64, cr3: UInt64, cr4: UInt64, efer: UInt64) {
        self.cs = cs; self.ds = ds; self.es = es; self.fs = fs; self.gs = gs; self.ss = ss; self.tr = tr; self.ldt = ldt
        self.gdtBase = gdtBase; self.gdtLimit = gdtLimit; self.idtBase = idtBase; self.idtLimit = idtLimit
        self.cr0 = cr0; self.cr3 = cr3; self.cr4 = cr4; self.efer = efer
    }
}

/// General registers SwiftVMM sets at boot.
public struct GeneralRegisters: Equatable, Sendable {
    public var rip: UInt64 = 0, rsp: UInt64 = 0, rbp: UInt64 = 0, rsi: UInt64 = 0, rbx: UInt64 = 0
    public var rflags: UInt64 = 0x2
    public init() {}
}

/// A vCPU's state as `VCPU.snapshot()` read it.
public struct VCPUSnapshot: Equatable, Sendable {
    /// KVM_MP_STATE_*: whether the vCPU runs, waits in HLT, or waits for INIT/SIPI.
    public enum MPState: Equatable, Sendable {
        case runnable, uninitialized, initReceived, halted, sipiReceived, other(UInt32)
        init(raw: UInt32) {
            switch raw {
            case 0: self = .runnable
            case 1: self = .uninitialized
            case 2: self = .initReceived
            case 3: self = .halted
            case 4: self = .sipiReceived
            default: self = .other(raw)
            }
        }
    }
    public var rip, rsp, rflags, cr0, cr2, cr3, cr4, efer: UInt64
    /// CS.L: the vCPU runs 64-bit code.
    public var longModeCode: Bool
    public var mpState: MPState

    public init(rip: UInt64, rsp: UInt64, rflags: UInt64, cr0: UInt64, cr2: UInt64, cr3: UInt64, cr4: UInt64,
                efer: UInt64, longModeCode: Bool, mpState: MPState) {
        self.rip = rip; self.rsp = rsp; self.rflags = rflags; self.cr0 = cr0; self.cr2 = cr2; self.cr3 = cr3
        self.cr4 = cr4; self.efer = efer; self.longModeCode = longModeCode; self.mpState = mpState
    }

    /// One line for a log: "RIP 0x... (64-bit, interrupts on, halted in HLT), RSP ..., CR2 ..., CR3 ...".
    public var summary: String {
        func h(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
        let mode: String
        if cr0 & 1 == 0 { mode = "real mode" } else if longModeCode { mode = "64-bit" } else if efer & (1 << 10) != 0 {
            mode = "compatibility mode"
        } else { mode = "32-bit protected mode" }
        let irq = rflags & (1 << 9) != 0 ? "interrupts on" : "interrupts off"
        let state: String
        switch mpState {
        case .runnable: state = "running"
        case .halted: state = "halted in HLT"
        case .uninitialized: state = "not started (waits for INIT)"
        case .initReceived: state = "waits for SIPI"
        case .sipiReceived: state = "SIPI received"
        case let .other(v): state = "MP state \(v)"
        }
        return "RIP \(h(rip)) (\(mode), \(irq), \(state)), RSP \(h(rsp)), RFLAGS \(h(rflags)), CR0 \(h(cr0)), CR2 \(h(cr2)), CR3 \(h(cr3)), CR4 \(h(cr4))"
    }
}

/// A virtual CPU (the fd returned by KVM_CREATE_VCPU) and its kvm_run page.
public final class VCPU: Sendable {
    public let id: UInt32
    let fd: FileDescriptor
    let runMapping: FileMapping

    init(id: UInt32, fd: FileDescriptor, run: FileMapping) {
        self.id = id
        self.fd = fd
        self.runMapping = run
    }

    /// The shared kvm_run page (exit information, PIO and MMIO data).
    var runPage: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: runMapping.pointer, count: runMapping.size)
    }

    /// Makes the next (or current, after a kick) KVM_RUN return EINTR at once.
    public func setImmediateExit(_ on: Bool) {
        // SAFETY: the offset is inside struct kvm_run, whose size the mapping exceeds (checked at creation).
        runMapping.pointer.storeBytes(of: on ? UInt8(1) : 0, toByteOffset: SHIM_RUN_IMMEDIATE_EXIT, as: UInt8.self)
    }

    /// Runs the vCPU until the next exit and decodes it. EINTR is not retried:
    /// it means the vCPU was kicked, and is reported as `.interrupted`.
    /// The `ExitData` of an I/O or MMIO exit is this vCPU's run page: what the
    /// caller stores into it for a read reaches the guest on the next `run()`,
    /// and it must not be used after that. The corresponding ioctl is `KVM_RUN`.
    public func run() throws -> VCPUExit {
        let (r, err) = fd.ioctlOnce(SHIM_KVM_RUN)
        if r < 0 {
            if err == Errno.EINTR || err == Errno.EAGAIN { return .interrupted }
            throw KVMError.ioctl(SysError(errno: err, operation: "KVM_RUN on vCPU \(id)"))
        }
        return VCPUExit.decode(runPage)
    }

    /// The corresponding ioctl is `KVM_SET_CPUID2`.
    public func setCPUID(_ entries: [CPUIDEntry]) throws {
        var header = kvm_cpuid2()
        header.nent = UInt32(entries.count)
        try withFlexibleArray(header, count: entries.count, of: kvm_cpuid_entry2.self) { c, p in
            for (i, e) in entries.enumerated() {
                var k = kvm_cpuid_entry2()
                k.function = e.function; k.index = e.index; k.flags = e.flags
                k.eax = e.eax; k.ebx = e.ebx; k.ecx = e.ecx; k.edx = e.edx
                p[i] = k
            }
            try kvmCall { try fd.ioctl(SHIM_KVM_SET_CPUID2, pointer: UnsafeMutableRawPointer(c), "KVM_SET_CPUID2 on vCPU \(id)") }
        }
    }

    /// Sets model-specific registers. The corresponding ioctl is `KVM_SET_MSRS`.
    public func setMSRs(_ msrs: [(index: UInt32, value: UInt64)]) throws {
        guard !msrs.isEmpty else { return }
        var header = kvm_msrs()
        header.nmsrs = UInt32(msrs.count)
        let n = try withFlexibleArray(header, count: msrs.count, of: kvm_msr_entry.self) { m, p in
            for (i, e) in msrs.enumerated() {
                var k = kvm_msr_entry()
                k.index = e.index
                k.data = e.value
                p[i] = k
            }
            return try kvmCall { try fd.ioctl(SHIM_KVM_SET_MSRS, pointer: UnsafeMutableRawPointer(m), "KVM_SET_MSRS on vCPU \(id)") }
        }
        if Int(n) != msrs.count {
            let failed = msrs[Int(n)].index
            throw KVMError.ioctl(SysError(errno: Errno.EINVAL, operation: "KVM_SET_MSRS on vCPU \(id): MSR 0x\(String(failed, radix: 16)) rejected"))
        }
    }

    /// The corresponding ioctls are `KVM_GET_REGS` / `KVM_SET_REGS`.
    public func setRegisters(_ g: GeneralRegisters) throws {
        var r = kvm_regs()
        r.rip = g.rip; r.rsp = g.rsp; r.rbp = g.rbp; r.rsi = g.rsi; r.rbx = g.rbx; r.rflags = g.rflags
        try kvmCall { try fd.ioctl(SHIM_KVM_SET_REGS, value: &r, "KVM_SET_REGS") }
    }

    /// The general registers SwiftVMM knows (RIP for crash reports).
    /// The corresponding ioctl is `KVM_GET_REGS`.
    public func getRegisters() throws -> GeneralRegisters {
        var r = kvm_regs()
        try kvmCall { try fd.ioctl(SHIM_KVM_GET_REGS, value: &r, "KVM_GET_REGS") }
        var g = GeneralRegisters()
        g.rip = r.rip; g.rsp = r.rsp; g.rbp = r.rbp; g.rsi = r.rsi; g.rbx = r.rbx; g.rflags = r.rflags
        return g
    }

    /// Where the vCPU is, for a report on a guest that hung: its registers and
    /// whether it waits in HLT. The corresponding ioctls are `KVM_GET_REGS`,
    /// `KVM_GET_SREGS` and `KVM_GET_MP_STATE`; call it only while the vCPU is
    /// not in KVM_RUN.
    public func snapshot() throws -> VCPUSnapshot {
        var r = kvm_regs()
        try kvmCall { try fd.ioctl(SHIM_KVM_GET_REGS, value: &r, "KVM_GET_REGS") }
        var k = kvm_sregs()
        try kvmCall { try fd.ioctl(SHIM_KVM_GET_SREGS, value: &k, "KVM_GET_SREGS") }
        var m = kvm_mp_state()
        try kvmCall { try fd.ioctl(SHIM_KVM_GET_MP_STATE, value: &m, "KVM_GET_MP_STATE") }
        return VCPUSnapshot(rip: r.rip, rsp: r.rsp, rflags: r.rflags, cr0: k.cr0, cr2: k.cr2, cr3: k.cr3, cr4: k.cr4,
                            efer: k.efer, longModeCode: k.cs.l != 0, mpState: VCPUSnapshot.MPState(raw: m.mp_state))
    }

    /// Reads the current special registers, applies `s`, writes them back.
    /// The corresponding ioctls are `KVM_GET_SREGS` / `KVM_SET_SREGS`.
    public func setSpecialRegisters(_ s: SpecialRegisters) throws {
        var k = kvm_sregs()
        try kvmCall { try fd.ioctl(SHIM_KVM_GET_SREGS, value: &k, "KVM_GET_SREGS") }
        k.cs = s.cs.kvm; k.ds = s.ds.kvm; k.es = s.es.kvm; k.fs = s.fs.kvm; k.gs = s.gs.kvm; k.ss = s.ss.kvm
        k.tr = s.tr.kvm; k.ldt = s.ldt.kvm
        k.gdt.base = s.gdtBase; k.gdt.limit = s.gdtLimit
        k.idt.base = s.idtBase; k.idt.limit = s.idtLimit
        k.cr0 = s.cr0; k.cr3 = s.cr3; k.cr4 = s.cr4; k.efer = s.efer
        try kvmCall { try fd.ioctl(SHIM_KVM_SET_SREGS, value: &k, "KVM_SET_SREGS") }
    }

    /// x87/SSE defaults. The corresponding ioctl is `KVM_SET_FPU`.
    public func setFPU(fcw: UInt16, mxcsr: UInt32) throws {
        var f = kvm_fpu()
        f.fcw = fcw
        f.mxcsr = mxcsr
        try kvmCall { try fd.ioctl(SHIM_KVM_SET_FPU, value: &f, "KVM_SET_FPU") }
    }

    /// Sets LINT0 to ExtINT and LINT1 to NMI in the local APIC, as a PC's BIOS
    /// does (Intel MP spec 1.4, virtual wire mode; SDM vol. 3 10.5.1).
    /// The corresponding ioctls are `KVM_GET_LAPIC` / `KVM_SET_LAPIC`.
    public func setupLocalInterrupts() throws {
        var l = kvm_lapic_state()
        try kvmCall { try fd.ioctl(SHIM_KVM_GET_LAPIC, value: &l, "KVM_GET_LAPIC") }
        withUnsafeMutableBytes(of: &l.regs) { regs in
            func setMode(_ off: Int, _ mode: UInt32) {
                // SAFETY: off + 4 <= 1024, the size of the register page.
                var v = regs.loadUnaligned(fromByteOffset: off, as: UInt32.self)
                v = (v & ~UInt32(0x700)) | (mode << 8)
                regs.storeBytes(of: v, toByteOffset: off, as: UInt32.self)
            }
            setMode(SHIM_APIC_LVT0, 0x7) // ExtINT
            setMode(SHIM_APIC_LVT1, 0x4) // NMI
        }
        try kvmCall { try fd.ioctl(SHIM_KVM_SET_LAPIC, value: &l, "KVM_SET_LAPIC") }
    }
}
