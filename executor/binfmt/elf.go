package binfmt

import (
	"debug/elf"
	"encoding/binary"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// elfTarget is what the first bytes of an ELF executable say about the
// machine it is for: class (32 or 64 bit), byte order and e_machine.
type elfTarget struct {
	class   elf.Class
	data    elf.Data
	machine elf.Machine
}

func (t elfTarget) String() string {
	bits := "32-bit"
	if t.class == elf.ELFCLASS64 {
		bits = "64-bit"
	}
	order := "little-endian"
	if t.data == elf.ELFDATA2MSB {
		order = "big-endian"
	}
	return fmt.Sprintf("%s, %s %s", t.machine, bits, order)
}

// elfTargets maps a GOARCH (an OCI platform's architecture) to the ELF
// identification of Linux executables for it (machine, class, byte order),
// written with debug/elf's constants; these are what the Go linker and
// Debian's gcc write for the architecture.
var elfTargets = map[string]elfTarget{
	"386":      {elf.ELFCLASS32, elf.ELFDATA2LSB, elf.EM_386},
	"amd64":    {elf.ELFCLASS64, elf.ELFDATA2LSB, elf.EM_X86_64},
	"arm":      {elf.ELFCLASS32, elf.ELFDATA2LSB, elf.EM_ARM},
	"arm64":    {elf.ELFCLASS64, elf.ELFDATA2LSB, elf.EM_AARCH64},
	"loong64":  {elf.ELFCLASS64, elf.ELFDATA2LSB, elf.EM_LOONGARCH},
	"mips":     {elf.ELFCLASS32, elf.ELFDATA2MSB, elf.EM_MIPS},
	"mipsle":   {elf.ELFCLASS32, elf.ELFDATA2LSB, elf.EM_MIPS},
	"mips64":   {elf.ELFCLASS64, elf.ELFDATA2MSB, elf.EM_MIPS},
	"mips64le": {elf.ELFCLASS64, elf.ELFDATA2LSB, elf.EM_MIPS},
	"ppc64":    {elf.ELFCLASS64, elf.ELFDATA2MSB, elf.EM_PPC64},
	"ppc64le":  {elf.ELFCLASS64, elf.ELFDATA2LSB, elf.EM_PPC64},
	"riscv64":  {elf.ELFCLASS64, elf.ELFDATA2LSB, elf.EM_RISCV},
	"s390x":    {elf.ELFCLASS64, elf.ELFDATA2MSB, elf.EM_S390},
}

// armVariants are the 32-bit ARM variants whose executables are EM_ARM
// little-endian (OCI's image-index platform variants for arm).
var armVariants = map[string]bool{"": true, "v5": true, "v6": true, "v7": true}

// elfFor returns the ELF identification of Linux executables of p.
func elfFor(p v1.Platform) (elfTarget, error) {
	if p.OS != "linux" && p.OS != "" {
		return elfTarget{}, fmt.Errorf("platform %s: only linux executables can run through binfmt_misc", PlatformString(p))
	}
	t, ok := elfTargets[p.Architecture]
	if !ok {
		return elfTarget{}, fmt.Errorf("platform %s: no ELF machine is known for architecture %q", PlatformString(p), p.Architecture)
	}
	if p.Architecture == "arm" && !armVariants[p.Variant] {
		return elfTarget{}, fmt.Errorf("platform %s: unknown arm variant %q (v5, v6 or v7)", PlatformString(p), p.Variant)
	}
	return t, nil
}

// knownHeaderLen is how many leading bytes of an executable elfHeaders
// knows: e_ident (16), e_type (2), e_machine (2) and e_version (4). What
// follows (entry point, header offsets, e_flags) differs between
// executables of one platform.
const knownHeaderLen = 24

// headerBufLen is the number of bytes of a file the kernel holds when it
// matches binfmt_misc entries (BINPRM_BUF_SIZE); no entry's offset+length
// goes past it.
const headerBufLen = 256

// elfHeaders returns the first knownHeaderLen bytes of the kinds of
// executables of t that a build runs: a static executable (ET_EXEC, as Go
// links) and a position-independent one (ET_DYN, as Debian's gcc links),
// each with OS/ABI "none" and GNU/Linux (static glibc binaries with IFUNCs
// are marked ELFOSABI_LINUX).
func elfHeaders(t elfTarget) [][]byte {
	var order binary.ByteOrder = binary.LittleEndian
	if t.data == elf.ELFDATA2MSB {
		order = binary.BigEndian
	}
	var out [][]byte
	for _, typ := range []elf.Type{elf.ET_EXEC, elf.ET_DYN} {
		for _, abi := range []elf.OSABI{elf.ELFOSABI_NONE, elf.ELFOSABI_LINUX} {
			h := make([]byte, knownHeaderLen)
			copy(h, elf.ELFMAG)
			h[elf.EI_CLASS] = byte(t.class)
			h[elf.EI_DATA] = byte(t.data)
			h[elf.EI_VERSION] = byte(elf.EV_CURRENT)
			h[elf.EI_OSABI] = byte(abi)
			// EI_ABIVERSION and the padding up to EI_NIDENT stay zero.
			order.PutUint16(h[16:], uint16(typ))
			order.PutUint16(h[18:], uint16(t.machine))
			order.PutUint32(h[20:], uint32(elf.EV_CURRENT))
			out = append(out, h)
		}
	}
	return out
}

// PlatformString formats p as os/arch[/variant].
func PlatformString(p v1.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}
