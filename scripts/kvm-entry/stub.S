/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The smallest faithful shim between QEMU and the supermachine runtime's x86_64 KVM entry
 * (scripts/kvm-entry-test.sh). QEMU cannot start a vCPU in long mode, so it boots this stub the
 * PVH way (32-bit protected mode, paging off). QEMU's firmware runs in low memory before it, so
 * tools/kvm-entry stages the runtime's first 640 KiB of RAM (page tables, GDT, zero page,
 * command line, MP table) at STAGE and the stub copies it into place, around itself. Then it
 * puts the vCPU into exactly the state the runtime's setup_boot() returned and jumps to the
 * kernel. It builds no page tables, GDT or zero page of its own.
 *
 * STAGE is defined when the stub is linked (ld --defsym STAGE=ADDR): tools/kvm-entry picks free
 * guest RAM for it. PARAMS (= STAGE + 640 KiB), little-endian:
 *   0x00 cr3  0x08 cr4  0x10 efer  0x18 cr0  0x20 far pointer: u32 offset (filled here), u16 cs
 *   0x26 ds selector  0x28 rip  0x30 rsi  0x38 GDT descriptor (u16 limit, u32 base)  0x40 rflags
 */
#define LOW_END 0xa0000
#define PARAMS (STAGE + LOW_END)
#define STUB_LO 0x5000		/* this stub and its stack: 0x5000-0x7fff, not copied over */
#define STUB_HI 0x8000
#define MSR_EFER 0xc0000080

	.section .note.Xen, "a"
	.balign 4
	.long 4, 4, 18		/* name size, desc size, XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz "Xen"
	.balign 4
	.long _start

	.text
	.code32
	.globl _start
_start:
	cli
	cld
	movl $STAGE, %esi
	xorl %edi, %edi
	movl $STUB_LO, %ecx
	rep movsb
	movl $STAGE + STUB_HI, %esi
	movl $STUB_HI, %edi
	movl $LOW_END - STUB_HI, %ecx
	rep movsb
	lgdt PARAMS + 0x38
	movl PARAMS + 0x08, %eax
	movl %eax, %cr4
	movl PARAMS + 0x00, %eax
	movl %eax, %cr3
	movl $MSR_EFER, %ecx
	movl PARAMS + 0x10, %eax
	movl PARAMS + 0x14, %edx
	wrmsr
	movl PARAMS + 0x18, %eax
	movl %eax, %cr0		/* paging on: long mode, still in 32-bit compatibility code */
	movl $long64, PARAMS + 0x20
	ljmp *PARAMS + 0x20	/* to the runtime's 64-bit code segment */

	.code64
long64:
	movw PARAMS + 0x26, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	movw %ax, %fs
	movw %ax, %gs
	pushq PARAMS + 0x40
	popfq
	movq PARAMS + 0x30, %rsi
	jmpq *PARAMS + 0x28
