/* CRC-32 (IEEE 802.3, as zlib.crc32): crc32_core.c. */
#ifndef ZIPLINE_CRC32_H
#define ZIPLINE_CRC32_H
#include <stddef.h>
#include <stdint.h>

/* Builds the table and detects PCLMULQDQ once; returns 1 when the folded path is used. */
int zl_crc32_init(void);
/* The CRC-32 of p[0, n). zl_crc32_init() must have run. */
uint32_t zl_crc32(const uint8_t *p, size_t n);
#endif
