import VMConfig
import XCTest

/// `[viommu]`, `--viommu` and the per-device `iommu` keys.
final class VIOMMUConfigTests: XCTestCase {
    private func parse(_ text: String, _ o: ConfigOverrides = ConfigOverrides()) -> Result<VMConfig, ConfigError> {
        ConfigLoader.parse(text, baseDirectory: "/cfg", overrides: o, overridesRelativeTo: "/cwd", checkFiles: false)
    }

    private func problems(_ text: String, _ o: ConfigOverrides = ConfigOverrides()) -> [String] {
        if case let .failure(e) = parse(text, o) { return e.issues.map(\.description) }
        return []
    }

    func testNoVIOMMUByDefaultAndEveryDeviceBehindOneWhenThereIs() throws {
        let devices = """
            [[disk]]
            path = "a.img"
            [[net]]
            tap = "tap0"
            [console]
            mode = "terminal"
            [rng]
            enabled = true
            [[passthrough]]
            device = "03:00.0"

            """
        let plain = try config(kernelOnly + devices)
        XCTAssertNil(plain.viommu)
        let c = try config(kernelOnly + devices + "[viommu]\n")
        XCTAssertEqual(c.viommu, VIOMMUConfig(maxDomains: 1024, maxMappingsPerDomain: 65536))
        XCTAssertEqual(c.disks.map(\.iommu), [true])
        XCTAssertEqual(c.nets.map(\.iommu), [true])
        XCTAssertEqual(c.passthrough.map(\.iommu), [true])
        XCTAssertTrue(c.virtioConsoleIOMMU)
        XCTAssertTrue(c.rngIOMMU)
    }

    func testEveryKey() throws {
        let c = try config(kernelOnly + """
            [viommu]
            enabled = true
            max_domains = 8
            max_mappings = 4096
            poll_us = 0
            [[disk]]
            path = "a.img"
            iommu = false
            [[disk]]
            path = "b.img"
            iommu = true
            [[net]]
            tap = "tap0"
            iommu = false
            [console]
            mode = "terminal"
            iommu = false
            [rng]
            enabled = true
            iommu = false
            [[passthrough]]
            device = "03:00.0"
            iommu = false
            """)
        XCTAssertEqual(c.viommu, VIOMMUConfig(maxDomains: 8, maxMappingsPerDomain: 4096, pollMicroseconds: 0))
        XCTAssertEqual(c.disks, [DiskConfig(path: "/cfg/a.img", iommu: false), DiskConfig(path: "/cfg/b.img")])
        XCTAssertEqual(c.nets.map(\.iommu), [false])
        XCTAssertFalse(c.virtioConsoleIOMMU)
        XCTAssertFalse(c.rngIOMMU)
        XCTAssertEqual(c.passthrough, [PassthroughConfig(device: .pciAddress("0000:03:00.0"), iommu: false)])
    }

    func testEnabledFalseMeansNone() throws {
        XCTAssertNil(try config(kernelOnly + "[viommu]\nenabled = false\nmax_domains = 4\n").viommu)
    }

    func testBadValuesNameTheirKey() {
        XCTAssertEqual(problems(kernelOnly + """
            [viommu]
            enabled = "yes"
            max_domains = 0
            max_mappings = "many"
            colour = 1
            [[disk]]
            path = "a.img"
            iommu = "no"
            """), [
                "disk[0].iommu: expected a boolean, got a string",
                "viommu.max_domains: 0 is out of range (1...65536)",
                "viommu.max_mappings: expected an integer, got a string",
                "viommu.enabled: expected a boolean, got a string",
                "viommu.colour: unknown key",
            ])
        XCTAssertEqual(problems(kernelOnly + "[viommu]\nmax_mappings = 2000000\n"),
                       ["viommu.max_mappings: 2000000 is out of range (1...1048576)"])
        XCTAssertEqual(problems(kernelOnly + "[viommu]\npoll_us = -1\n"), ["viommu.poll_us: -1 is out of range (0...100000)"])
        XCTAssertEqual(problems(kernelOnly + "[viommu]\npoll_us = 1.5\n"), ["viommu.poll_us: expected an integer, got a float"])
        XCTAssertEqual(problems("viommu = true\n" + kernelOnly), ["viommu: expected a table, got a boolean"])
    }

    func testIOMMUFalseWithoutAVIOMMUIsAnIssue() {
        XCTAssertEqual(problems(kernelOnly + """
            [[net]]
            tap = "tap0"
            iommu = false
            [rng]
            enabled = true
            iommu = false
            """), [
                "net[0].iommu: false only has a meaning with a vIOMMU ([viommu] or --viommu)",
                "rng.iommu: false only has a meaning with a vIOMMU ([viommu] or --viommu)",
            ])
        XCTAssertEqual(problems(kernelOnly + "[[net]]\ntap = \"tap0\"\niommu = false\n", ConfigOverrides(viommu: true)), [],
                       "--viommu gives the key its meaning")
    }

    func testTheCommandLineFlag() throws {
        guard case let .success(c) = parse(kernelOnly, ConfigOverrides(viommu: true)) else { return XCTFail("refused") }
        XCTAssertEqual(c.viommu, VIOMMUConfig())
        guard case let .success(d) = parse(kernelOnly + "[viommu]\nmax_domains = 3\n", ConfigOverrides(viommu: true)) else {
            return XCTFail("refused")
        }
        XCTAssertEqual(d.viommu?.maxDomains, 3, "--viommu keeps the table's settings")
        XCTAssertFalse(ConfigOverrides(viommu: true).isEmpty)
        let applied = try VMConfig(kernelPath: "/k").overriding(viommu: true, checkFiles: false)
        XCTAssertEqual(applied.viommu, VIOMMUConfig())
    }

    func testTheVIOMMUTakesAPCISlot() {
        let disks = String(repeating: "[[disk]]\npath = \"d.img\"\nread_only = true\n", count: 31)
        XCTAssertEqual(problems(kernelOnly + disks), [])
        XCTAssertEqual(problems(kernelOnly + disks + "[viommu]\n"),
                       ["viommu: no PCI slot left: 31 disks and the vIOMMU need 32 slots, and PCI bus 0 has 31"])
        XCTAssertEqual(problems(kernelOnly + disks, ConfigOverrides(viommu: true)),
                       ["viommu: no PCI slot left: 31 disks and the vIOMMU need 32 slots, and PCI bus 0 has 31"])
    }
}
