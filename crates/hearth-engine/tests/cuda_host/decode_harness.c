// Host harness for quant.cuh (driven by tests/cuda_decode_host.rs): compiled once per weight type with that
// type's WT_* defines, it decodes every 32-weight unit of every row of a file through wt_deq32 and writes
// the f32 values, so the test can compare them bit for bit with the Rust reference.
//
// Usage: decode_harness IN OUT UNITS_PER_ROW
//   IN:  rows of UNITS_PER_ROW * 32 / WT_BLOCK_ELEMS blocks of WT_BLOCK_BYTES bytes, back to back
//   OUT: rows * UNITS_PER_ROW * 32 little-endian f32
// Prints "WT_BLOCK_ELEMS WT_BLOCK_BYTES rows" on stdout so the test can check the layout macros too.

#include <stdio.h>
#include <stdlib.h>

#include "quant.cuh"

int main(int argc, char** argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s IN OUT UNITS_PER_ROW\n", argv[0]);
        return 2;
    }
    long units = atol(argv[3]);
    long elems = units * 32;
    if (units <= 0 || elems % WT_BLOCK_ELEMS != 0) {
        fprintf(stderr, "%ld units are not whole blocks of %d\n", units, WT_BLOCK_ELEMS);
        return 2;
    }
    long row_bytes = elems / WT_BLOCK_ELEMS * WT_BLOCK_BYTES;

    FILE* in = fopen(argv[1], "rb");
    if (!in) {
        perror(argv[1]);
        return 1;
    }
    fseek(in, 0, SEEK_END);
    long size = ftell(in);
    fseek(in, 0, SEEK_SET);
    if (size <= 0 || size % row_bytes != 0) {
        fprintf(stderr, "%s: %ld bytes are not whole rows of %ld\n", argv[1], size, row_bytes);
        return 1;
    }
    u8* data = malloc((size_t)size);
    if (!data || fread(data, 1, (size_t)size, in) != (size_t)size) {
        fprintf(stderr, "%s: read failed\n", argv[1]);
        return 1;
    }
    fclose(in);

    long rows = size / row_bytes;
    FILE* out = fopen(argv[2], "wb");
    if (!out) {
        perror(argv[2]);
        return 1;
    }
    for (long r = 0; r < rows; r++) {
        for (int u = 0; u < (int)units; u++) {
            float v[32];
            wt_deq32(data + r * row_bytes, u, v);
            // The host is little-endian (x86-64, aarch64), so the floats' bytes are written as they are.
            if (fwrite(v, sizeof(float), 32, out) != 32) {
                fprintf(stderr, "%s: write failed\n", argv[2]);
                return 1;
            }
        }
    }
    if (fclose(out) != 0) {
        perror(argv[2]);
        return 1;
    }
    free(data);
    printf("%d %d %ld\n", WT_BLOCK_ELEMS, WT_BLOCK_BYTES, rows);
    return 0;
}
