import XCTest
@testable import VFIO

/// Every combination of IOMMU kind, snoop capability, hwpt report and the
/// device's No Snoop bit.
final class CoherencyTests: XCTestCase {
    let vtdSC = IOMMUHardwareInfo.intelVTd(flags: 0, capReg: 0x00d2_0088_10ef_0466, ecapReg: 0xf0_0f5e | 0x80)
    let vtdNoSC = IOMMUHardwareInfo.intelVTd(flags: 0, capReg: 0x00d2_0088_10ef_0466, ecapReg: 0xf0_0f5e & ~0x80)

    func testVTdSnoopControlBit() {
        XCTAssertEqual(vtdSC.canEnforceSnoop, true)
        XCTAssertEqual(vtdNoSC.canEnforceSnoop, false)
        // Only bit 7 matters.
        XCTAssertEqual(IOMMUHardwareInfo.intelVTd(flags: 0, capReg: 0, ecapReg: 0x80).canEnforceSnoop, true)
        XCTAssertEqual(IOMMUHardwareInfo.intelVTd(flags: 0, capReg: 0, ecapReg: ~UInt64(0x80)).canEnforceSnoop, false)
    }

    func testSnoopControlIsNoOpWhateverTheDevice() {
        for noSnoop in [false, true] {
            for forbid in [false, true] {
                let v = CoherencyVerdict.decide(iommu: vtdSC, hwptEnforcesCoherency: nil, deviceNoSnoopEnabled: noSnoop, vmmForbidsNoSnoop: forbid)
                XCTAssertFalse(v.mustFlush, "noSnoop \(noSnoop) forbid \(forbid)")
                XCTAssertTrue(v.text.contains("snoop control"), v.text)
            }
        }
    }

    func testNoSnoopControlAndNoSnoopEnabledMustFlush() {
        for forbid in [false, true] {
            let v = CoherencyVerdict.decide(iommu: vtdNoSC, hwptEnforcesCoherency: nil, deviceNoSnoopEnabled: true, vmmForbidsNoSnoop: forbid)
            XCTAssertTrue(v.mustFlush)
            XCTAssertTrue(v.reason.contains("No Snoop enabled"), v.reason)
        }
    }

    func testNoSnoopControlNoSnoopDisabledIsFlushUnlessForbidden() {
        let v = CoherencyVerdict.decide(iommu: vtdNoSC, hwptEnforcesCoherency: nil, deviceNoSnoopEnabled: false)
        XCTAssertTrue(v.mustFlush)
        XCTAssertTrue(v.reason.contains("coherent in practice"), v.reason)
        XCTAssertTrue(v.reason.contains("config write"), v.reason)
        let trapped = CoherencyVerdict.decide(iommu: vtdNoSC, hwptEnforcesCoherency: nil, deviceNoSnoopEnabled: false, vmmForbidsNoSnoop: true)
        XCTAssertFalse(trapped.mustFlush)
    }

    func testUnknownIOMMUMustFlush() {
        for iommu in [IOMMUHardwareInfo.none, .unknown(type: 99)] {
            for noSnoop in [false, true] {
                for forbid in [false, true] {
                    let v = CoherencyVerdict.decide(iommu: iommu, hwptEnforcesCoherency: nil, deviceNoSnoopEnabled: noSnoop, vmmForbidsNoSnoop: forbid)
                    XCTAssertTrue(v.mustFlush, "\(iommu) \(noSnoop) \(forbid)")
                    XCTAssertTrue(v.reason.contains("cannot tell"), v.reason)
                }
            }
        }
    }

    func testHwptReportWins() {
        for iommu in [vtdSC, vtdNoSC, .none, .unknown(type: 7), .amdVi] {
            for noSnoop in [false, true] {
                XCTAssertFalse(CoherencyVerdict.decide(iommu: iommu, hwptEnforcesCoherency: true, deviceNoSnoopEnabled: noSnoop).mustFlush)
                XCTAssertTrue(CoherencyVerdict.decide(iommu: iommu, hwptEnforcesCoherency: false, deviceNoSnoopEnabled: noSnoop).mustFlush)
            }
        }
    }

    func testOtherIOMMUs() {
        XCTAssertFalse(CoherencyVerdict.decide(iommu: .amdVi, hwptEnforcesCoherency: nil, deviceNoSnoopEnabled: true).mustFlush)
        let coh = IOMMUHardwareInfo.armSMMUv3(flags: 0, idr: [0x10, 0, 0, 0, 0, 0], iidr: 0, aidr: 0)
        let nonCoh = IOMMUHardwareInfo.armSMMUv3(flags: 0, idr: [0x0f, 0, 0, 0, 0, 0], iidr: 0, aidr: 0)
        XCTAssertFalse(CoherencyVerdict.decide(iommu: coh, hwptEnforcesCoherency: nil, deviceNoSnoopEnabled: true).mustFlush)
        XCTAssertTrue(CoherencyVerdict.decide(iommu: nonCoh, hwptEnforcesCoherency: nil, deviceNoSnoopEnabled: true).mustFlush)
        XCTAssertNil(IOMMUHardwareInfo.armSMMUv3(flags: 0, idr: [], iidr: 0, aidr: 0).canEnforceSnoop)
    }

    func testVMVerdict() {
        let ok = CoherencyVerdict.wbinvdIsNoOp(reason: "a")
        let bad = CoherencyVerdict.wbinvdMustFlush(reason: "nic at 0000:00:02.0")
        XCTAssertFalse(CoherencyVerdict.decideVM([]).mustFlush)
        XCTAssertFalse(CoherencyVerdict.decideVM([ok, ok]).mustFlush)
        let vm = CoherencyVerdict.decideVM([ok, bad, ok])
        XCTAssertTrue(vm.mustFlush)
        XCTAssertTrue(vm.reason.contains("1 of 3"), vm.reason)
        XCTAssertTrue(vm.reason.contains("nic at 0000:00:02.0"), vm.reason)
        XCTAssertTrue(vm.text.hasPrefix("WBINVD must really flush"))
    }
}
