import Boot
import KVM

/// Applies the Boot layer's plain CPU state to a KVM vCPU.
enum BootStateAdapter {
    static func segment(_ s: BootCPUState.Segment) -> SegmentState {
        SegmentState(base: s.base, limit: s.limit, selector: s.selector, type: s.type, present: s.present ? 1 : 0,
                     dpl: s.dpl, db: s.db ? 1 : 0, s: s.s ? 1 : 0, l: s.l ? 1 : 0, g: s.g ? 1 : 0,
                     avl: s.avl ? 1 : 0, unusable: s.unusable ? 1 : 0)
    }

    static func specialRegisters(_ c: BootCPUState) -> SpecialRegisters {
        SpecialRegisters(cs: segment(c.cs), ds: segment(c.ds), es: segment(c.es), fs: segment(c.fs),
                         gs: segment(c.gs), ss: segment(c.ss), tr: segment(c.tr), ldt: segment(c.ldt),
                         gdtBase: c.gdt.base, gdtLimit: c.gdt.limit, idtBase: c.idt.base, idtLimit: c.idt.limit,
                         cr0: c.cr0, cr3: c.cr3, cr4: c.cr4, efer: c.efer)
    }

    static func generalRegisters(_ c: BootCPUState) -> GeneralRegisters {
        var g = GeneralRegisters()
        g.rip = c.rip; g.rsp = c.rsp; g.rbp = c.rbp; g.rsi = c.rsi; g.rbx = c.rbx; g.rflags = c.rflags
        return g
    }

    /// The boot vCPU: FPU, special registers, then general registers.
    static func apply(_ c: BootCPUState, to v: VCPU) throws {
        try v.setFPU(fcw: c.fpu.fcw, mxcsr: c.fpu.mxcsr)
        try v.setSpecialRegisters(specialRegisters(c))
        try v.setRegisters(generalRegisters(c))
    }
}
