// Simulation model of the Lattice ECP5 sysMEM block RAM, DP16KD (true dual port, 18 Kbit).
//
// Written for this project from the ECP5 and ECP5-5G Memory Usage Guide (Lattice TN1264):
// yosys's ECP5 cells_sim.v declares DP16KD only as an empty black box, so a netlist with block
// RAMs cannot be simulated with it. Port and parameter names are the primitive's (and those
// of yosys's declaration), so the model serves yosys `synth_ecp5` netlists (memories mapped by
// share/lattice/brams_map_16kd.v) and direct instances (gen/hw/accelerator.py on ECP5).
//
// Array: 1024 words of 18 bits (bit 8 and bit 17 of a word are the parity bits of the x9/x18
// modes). Every port addresses a word with AD[13:4]; the narrower widths select within it:
//   DATA_WIDTH 18: the word; write byte enables AD[0] (bits 8:0) and AD[1] (bits 17:9)
//              9: half AD[3] (entry 2w in bits 8:0, 2w+1 in bits 17:9)
//          4/2/1: entry AD[3:2] / AD[3:1] / AD[3:0] of the word's 16 data bits (bits 7:0 and
//                 16:9, entry 0 lowest); this packing is this model's reading, it matters only
//                 when the two ports of one block use different widths with one of them <= 4.
//             36: the pseudo dual-port mode yosys uses for wide memories (PDPW16KD, mapped
//                 onto DP16KD by share/lattice/brams_map_16kd.v): word pair AD[13:5] (entry
//                 2p holds bits 17:0, 2p+1 bits 35:18), data {DIB, DIA}; when written, byte
//                 enables AD[3:0] (9 bits each); when read (port B), the data is {DOB, DOA}.
// Data of a narrow port is on the low DI/DO pins; the other DO pins read zero.
// At the port's clock edge (CLKxMUX "INV": falling edge), with CEx and CSx[2:0] = CSDECODE_x:
//   write (WEx): the addressed bits take DIx; the read data latch keeps its value (WRITEMODE
//   "NORMAL"), takes the written word ("WRITETHROUGH") or the old one ("READBEFOREWRITE");
//   read (no WEx): the latch takes the addressed data.
// REGMODE_x "NOREG": DOx is the latch. "OUTREG": DOx is the output register, which takes the
// latch's value at each clock edge with OCEx, so that data arrives one cycle later. A 36-bit
// read takes port B's (REGMODE_B, OCEB) for all 36 bits and requires REGMODE_A = REGMODE_B.
// RSTx clears the latch and the output register whatever CEx/OCEx say (RESETMODE "SYNC": at
// the clock edge, "ASYNC": at once) and blocks a write in the same cycle (yosys describes the
// block so, share/lattice/brams_16kd.txt: "rdsrst zero ungated block_wr").
// INITVAL_00..3F: 16 words of 20 bits each, the low 18 of every 20 used (yosys's layout).
// Everything starts at zero apart from INITVAL (the global set/reset net is not modelled). The
// DI/AD/DO...MUX parameters other than "INV" clock selection are accepted and ignored; a
// collision of both ports on one word in one cycle is undefined on the device and here.
`timescale 1ns / 1ps

module DP16KD (
    input  DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0,
    input  ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3, ADA2, ADA1, ADA0,
    input  CEA, OCEA, CLKA, WEA, RSTA,
    input  CSA2, CSA1, CSA0,
    output DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6, DOA5, DOA4, DOA3, DOA2, DOA1, DOA0,
    input  DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8, DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0,
    input  ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3, ADB2, ADB1, ADB0,
    input  CEB, OCEB, CLKB, WEB, RSTB,
    input  CSB2, CSB1, CSB0,
    output DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6, DOB5, DOB4, DOB3, DOB2, DOB1, DOB0
);
    parameter DATA_WIDTH_A = 18;
    parameter DATA_WIDTH_B = 18;
    parameter REGMODE_A = "NOREG";
    parameter REGMODE_B = "NOREG";
    parameter RESETMODE = "SYNC";
    parameter ASYNC_RESET_RELEASE = "SYNC";
    parameter CSDECODE_A = "0b000";
    parameter CSDECODE_B = "0b000";
    parameter WRITEMODE_A = "NORMAL";
    parameter WRITEMODE_B = "NORMAL";
    parameter GSR = "ENABLED";
    parameter WID = 0;
    parameter INIT_DATA = "STATIC";
    parameter DIA17MUX = "DIA17";
    parameter DIA16MUX = "DIA16";
    parameter DIA15MUX = "DIA15";
    parameter DIA14MUX = "DIA14";
    parameter DIA13MUX = "DIA13";
    parameter DIA12MUX = "DIA12";
    parameter DIA11MUX = "DIA11";
    parameter DIA10MUX = "DIA10";
    parameter DIA9MUX = "DIA9";
    parameter DIA8MUX = "DIA8";
    parameter DIA7MUX = "DIA7";
    parameter DIA6MUX = "DIA6";
    parameter DIA5MUX = "DIA5";
    parameter DIA4MUX = "DIA4";
    parameter DIA3MUX = "DIA3";
    parameter DIA2MUX = "DIA2";
    parameter DIA1MUX = "DIA1";
    parameter DIA0MUX = "DIA0";
    parameter ADA13MUX = "ADA13";
    parameter ADA12MUX = "ADA12";
    parameter ADA11MUX = "ADA11";
    parameter ADA10MUX = "ADA10";
    parameter ADA9MUX = "ADA9";
    parameter ADA8MUX = "ADA8";
    parameter ADA7MUX = "ADA7";
    parameter ADA6MUX = "ADA6";
    parameter ADA5MUX = "ADA5";
    parameter ADA4MUX = "ADA4";
    parameter ADA3MUX = "ADA3";
    parameter ADA2MUX = "ADA2";
    parameter ADA1MUX = "ADA1";
    parameter ADA0MUX = "ADA0";
    parameter CEAMUX = "CEA";
    parameter OCEAMUX = "OCEA";
    parameter CLKAMUX = "CLKA";
    parameter WEAMUX = "WEA";
    parameter RSTAMUX = "RSTA";
    parameter CSA2MUX = "CSA2";
    parameter CSA1MUX = "CSA1";
    parameter CSA0MUX = "CSA0";
    parameter DOA17MUX = "DOA17";
    parameter DOA16MUX = "DOA16";
    parameter DOA15MUX = "DOA15";
    parameter DOA14MUX = "DOA14";
    parameter DOA13MUX = "DOA13";
    parameter DOA12MUX = "DOA12";
    parameter DOA11MUX = "DOA11";
    parameter DOA10MUX = "DOA10";
    parameter DOA9MUX = "DOA9";
    parameter DOA8MUX = "DOA8";
    parameter DOA7MUX = "DOA7";
    parameter DOA6MUX = "DOA6";
    parameter DOA5MUX = "DOA5";
    parameter DOA4MUX = "DOA4";
    parameter DOA3MUX = "DOA3";
    parameter DOA2MUX = "DOA2";
    parameter DOA1MUX = "DOA1";
    parameter DOA0MUX = "DOA0";
    parameter DIB17MUX = "DIB17";
    parameter DIB16MUX = "DIB16";
    parameter DIB15MUX = "DIB15";
    parameter DIB14MUX = "DIB14";
    parameter DIB13MUX = "DIB13";
    parameter DIB12MUX = "DIB12";
    parameter DIB11MUX = "DIB11";
    parameter DIB10MUX = "DIB10";
    parameter DIB9MUX = "DIB9";
    parameter DIB8MUX = "DIB8";
    parameter DIB7MUX = "DIB7";
    parameter DIB6MUX = "DIB6";
    parameter DIB5MUX = "DIB5";
    parameter DIB4MUX = "DIB4";
    parameter DIB3MUX = "DIB3";
    parameter DIB2MUX = "DIB2";
    parameter DIB1MUX = "DIB1";
    parameter DIB0MUX = "DIB0";
    parameter ADB13MUX = "ADB13";
    parameter ADB12MUX = "ADB12";
    parameter ADB11MUX = "ADB11";
    parameter ADB10MUX = "ADB10";
    parameter ADB9MUX = "ADB9";
    parameter ADB8MUX = "ADB8";
    parameter ADB7MUX = "ADB7";
    parameter ADB6MUX = "ADB6";
    parameter ADB5MUX = "ADB5";
    parameter ADB4MUX = "ADB4";
    parameter ADB3MUX = "ADB3";
    parameter ADB2MUX = "ADB2";
    parameter ADB1MUX = "ADB1";
    parameter ADB0MUX = "ADB0";
    parameter CEBMUX = "CEB";
    parameter OCEBMUX = "OCEB";
    parameter CLKBMUX = "CLKB";
    parameter WEBMUX = "WEB";
    parameter RSTBMUX = "RSTB";
    parameter CSB2MUX = "CSB2";
    parameter CSB1MUX = "CSB1";
    parameter CSB0MUX = "CSB0";
    parameter DOB17MUX = "DOB17";
    parameter DOB16MUX = "DOB16";
    parameter DOB15MUX = "DOB15";
    parameter DOB14MUX = "DOB14";
    parameter DOB13MUX = "DOB13";
    parameter DOB12MUX = "DOB12";
    parameter DOB11MUX = "DOB11";
    parameter DOB10MUX = "DOB10";
    parameter DOB9MUX = "DOB9";
    parameter DOB8MUX = "DOB8";
    parameter DOB7MUX = "DOB7";
    parameter DOB6MUX = "DOB6";
    parameter DOB5MUX = "DOB5";
    parameter DOB4MUX = "DOB4";
    parameter DOB3MUX = "DOB3";
    parameter DOB2MUX = "DOB2";
    parameter DOB1MUX = "DOB1";
    parameter DOB0MUX = "DOB0";
    parameter [319:0] INITVAL_00 = 320'h0;
    parameter [319:0] INITVAL_01 = 320'h0;
    parameter [319:0] INITVAL_02 = 320'h0;
    parameter [319:0] INITVAL_03 = 320'h0;
    parameter [319:0] INITVAL_04 = 320'h0;
    parameter [319:0] INITVAL_05 = 320'h0;
    parameter [319:0] INITVAL_06 = 320'h0;
    parameter [319:0] INITVAL_07 = 320'h0;
    parameter [319:0] INITVAL_08 = 320'h0;
    parameter [319:0] INITVAL_09 = 320'h0;
    parameter [319:0] INITVAL_0A = 320'h0;
    parameter [319:0] INITVAL_0B = 320'h0;
    parameter [319:0] INITVAL_0C = 320'h0;
    parameter [319:0] INITVAL_0D = 320'h0;
    parameter [319:0] INITVAL_0E = 320'h0;
    parameter [319:0] INITVAL_0F = 320'h0;
    parameter [319:0] INITVAL_10 = 320'h0;
    parameter [319:0] INITVAL_11 = 320'h0;
    parameter [319:0] INITVAL_12 = 320'h0;
    parameter [319:0] INITVAL_13 = 320'h0;
    parameter [319:0] INITVAL_14 = 320'h0;
    parameter [319:0] INITVAL_15 = 320'h0;
    parameter [319:0] INITVAL_16 = 320'h0;
    parameter [319:0] INITVAL_17 = 320'h0;
    parameter [319:0] INITVAL_18 = 320'h0;
    parameter [319:0] INITVAL_19 = 320'h0;
    parameter [319:0] INITVAL_1A = 320'h0;
    parameter [319:0] INITVAL_1B = 320'h0;
    parameter [319:0] INITVAL_1C = 320'h0;
    parameter [319:0] INITVAL_1D = 320'h0;
    parameter [319:0] INITVAL_1E = 320'h0;
    parameter [319:0] INITVAL_1F = 320'h0;
    parameter [319:0] INITVAL_20 = 320'h0;
    parameter [319:0] INITVAL_21 = 320'h0;
    parameter [319:0] INITVAL_22 = 320'h0;
    parameter [319:0] INITVAL_23 = 320'h0;
    parameter [319:0] INITVAL_24 = 320'h0;
    parameter [319:0] INITVAL_25 = 320'h0;
    parameter [319:0] INITVAL_26 = 320'h0;
    parameter [319:0] INITVAL_27 = 320'h0;
    parameter [319:0] INITVAL_28 = 320'h0;
    parameter [319:0] INITVAL_29 = 320'h0;
    parameter [319:0] INITVAL_2A = 320'h0;
    parameter [319:0] INITVAL_2B = 320'h0;
    parameter [319:0] INITVAL_2C = 320'h0;
    parameter [319:0] INITVAL_2D = 320'h0;
    parameter [319:0] INITVAL_2E = 320'h0;
    parameter [319:0] INITVAL_2F = 320'h0;
    parameter [319:0] INITVAL_30 = 320'h0;
    parameter [319:0] INITVAL_31 = 320'h0;
    parameter [319:0] INITVAL_32 = 320'h0;
    parameter [319:0] INITVAL_33 = 320'h0;
    parameter [319:0] INITVAL_34 = 320'h0;
    parameter [319:0] INITVAL_35 = 320'h0;
    parameter [319:0] INITVAL_36 = 320'h0;
    parameter [319:0] INITVAL_37 = 320'h0;
    parameter [319:0] INITVAL_38 = 320'h0;
    parameter [319:0] INITVAL_39 = 320'h0;
    parameter [319:0] INITVAL_3A = 320'h0;
    parameter [319:0] INITVAL_3B = 320'h0;
    parameter [319:0] INITVAL_3C = 320'h0;
    parameter [319:0] INITVAL_3D = 320'h0;
    parameter [319:0] INITVAL_3E = 320'h0;
    parameter [319:0] INITVAL_3F = 320'h0;

    // "0bXYZ" -> 3'bXYZ (the string's last three characters).
    function [2:0] cs_decode(input [39:0] text);
        cs_decode = {text[16], text[8], text[0]};
    endfunction

    // Position of data bit d (0..15) of a word in the narrow (x1/x2/x4) modes.
    function integer data_bit(input integer d);
        data_bit = d < 8 ? d : d + 1;
    endfunction

    // The word after writing di at ad with a port of the given width.
    function [17:0] merge(input integer width, input [17:0] word, input [17:0] di,
                          input [13:0] ad);
        integer i, entry;
        begin
            merge = word;
            case (width)
                18: begin
                    if (ad[0]) merge[8:0] = di[8:0];
                    if (ad[1]) merge[17:9] = di[17:9];
                end
                9: if (ad[3]) merge[17:9] = di[8:0]; else merge[8:0] = di[8:0];
                default: begin
                    entry = width == 4 ? ad[3:2] : width == 2 ? ad[3:1] : ad[3:0];
                    for (i = 0; i < width; i = i + 1)
                        merge[data_bit(entry * width + i)] = di[i];
                end
            endcase
        end
    endfunction

    // The data a port of the given width reads from word at ad (on the low DO pins).
    function [17:0] extract(input integer width, input [17:0] word, input [13:0] ad);
        integer i, entry;
        begin
            extract = 18'd0;
            case (width)
                18: extract = word;
                9: extract[8:0] = ad[3] ? word[17:9] : word[8:0];
                default: begin
                    entry = width == 4 ? ad[3:2] : width == 2 ? ad[3:1] : ad[3:0];
                    for (i = 0; i < width; i = i + 1)
                        extract[i] = word[data_bit(entry * width + i)];
                end
            endcase
        end
    endfunction

    reg [17:0] mem [0:1023];
    integer w;
    initial begin
        for (w = 0; w < 16; w = w + 1) begin
            mem['h00 * 16 + w] = INITVAL_00[w * 20 +: 18];
            mem['h01 * 16 + w] = INITVAL_01[w * 20 +: 18];
            mem['h02 * 16 + w] = INITVAL_02[w * 20 +: 18];
            mem['h03 * 16 + w] = INITVAL_03[w * 20 +: 18];
            mem['h04 * 16 + w] = INITVAL_04[w * 20 +: 18];
            mem['h05 * 16 + w] = INITVAL_05[w * 20 +: 18];
            mem['h06 * 16 + w] = INITVAL_06[w * 20 +: 18];
            mem['h07 * 16 + w] = INITVAL_07[w * 20 +: 18];
            mem['h08 * 16 + w] = INITVAL_08[w * 20 +: 18];
            mem['h09 * 16 + w] = INITVAL_09[w * 20 +: 18];
            mem['h0a * 16 + w] = INITVAL_0A[w * 20 +: 18];
            mem['h0b * 16 + w] = INITVAL_0B[w * 20 +: 18];
            mem['h0c * 16 + w] = INITVAL_0C[w * 20 +: 18];
            mem['h0d * 16 + w] = INITVAL_0D[w * 20 +: 18];
            mem['h0e * 16 + w] = INITVAL_0E[w * 20 +: 18];
            mem['h0f * 16 + w] = INITVAL_0F[w * 20 +: 18];
            mem['h10 * 16 + w] = INITVAL_10[w * 20 +: 18];
            mem['h11 * 16 + w] = INITVAL_11[w * 20 +: 18];
            mem['h12 * 16 + w] = INITVAL_12[w * 20 +: 18];
            mem['h13 * 16 + w] = INITVAL_13[w * 20 +: 18];
            mem['h14 * 16 + w] = INITVAL_14[w * 20 +: 18];
            mem['h15 * 16 + w] = INITVAL_15[w * 20 +: 18];
            mem['h16 * 16 + w] = INITVAL_16[w * 20 +: 18];
            mem['h17 * 16 + w] = INITVAL_17[w * 20 +: 18];
            mem['h18 * 16 + w] = INITVAL_18[w * 20 +: 18];
            mem['h19 * 16 + w] = INITVAL_19[w * 20 +: 18];
            mem['h1a * 16 + w] = INITVAL_1A[w * 20 +: 18];
            mem['h1b * 16 + w] = INITVAL_1B[w * 20 +: 18];
            mem['h1c * 16 + w] = INITVAL_1C[w * 20 +: 18];
            mem['h1d * 16 + w] = INITVAL_1D[w * 20 +: 18];
            mem['h1e * 16 + w] = INITVAL_1E[w * 20 +: 18];
            mem['h1f * 16 + w] = INITVAL_1F[w * 20 +: 18];
            mem['h20 * 16 + w] = INITVAL_20[w * 20 +: 18];
            mem['h21 * 16 + w] = INITVAL_21[w * 20 +: 18];
            mem['h22 * 16 + w] = INITVAL_22[w * 20 +: 18];
            mem['h23 * 16 + w] = INITVAL_23[w * 20 +: 18];
            mem['h24 * 16 + w] = INITVAL_24[w * 20 +: 18];
            mem['h25 * 16 + w] = INITVAL_25[w * 20 +: 18];
            mem['h26 * 16 + w] = INITVAL_26[w * 20 +: 18];
            mem['h27 * 16 + w] = INITVAL_27[w * 20 +: 18];
            mem['h28 * 16 + w] = INITVAL_28[w * 20 +: 18];
            mem['h29 * 16 + w] = INITVAL_29[w * 20 +: 18];
            mem['h2a * 16 + w] = INITVAL_2A[w * 20 +: 18];
            mem['h2b * 16 + w] = INITVAL_2B[w * 20 +: 18];
            mem['h2c * 16 + w] = INITVAL_2C[w * 20 +: 18];
            mem['h2d * 16 + w] = INITVAL_2D[w * 20 +: 18];
            mem['h2e * 16 + w] = INITVAL_2E[w * 20 +: 18];
            mem['h2f * 16 + w] = INITVAL_2F[w * 20 +: 18];
            mem['h30 * 16 + w] = INITVAL_30[w * 20 +: 18];
            mem['h31 * 16 + w] = INITVAL_31[w * 20 +: 18];
            mem['h32 * 16 + w] = INITVAL_32[w * 20 +: 18];
            mem['h33 * 16 + w] = INITVAL_33[w * 20 +: 18];
            mem['h34 * 16 + w] = INITVAL_34[w * 20 +: 18];
            mem['h35 * 16 + w] = INITVAL_35[w * 20 +: 18];
            mem['h36 * 16 + w] = INITVAL_36[w * 20 +: 18];
            mem['h37 * 16 + w] = INITVAL_37[w * 20 +: 18];
            mem['h38 * 16 + w] = INITVAL_38[w * 20 +: 18];
            mem['h39 * 16 + w] = INITVAL_39[w * 20 +: 18];
            mem['h3a * 16 + w] = INITVAL_3A[w * 20 +: 18];
            mem['h3b * 16 + w] = INITVAL_3B[w * 20 +: 18];
            mem['h3c * 16 + w] = INITVAL_3C[w * 20 +: 18];
            mem['h3d * 16 + w] = INITVAL_3D[w * 20 +: 18];
            mem['h3e * 16 + w] = INITVAL_3E[w * 20 +: 18];
            mem['h3f * 16 + w] = INITVAL_3F[w * 20 +: 18];
        end
    end


    // The 36-bit data of the wide mode: {DIB, DIA}.
    wire [35:0] di_wide = {DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8, DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0, DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0};

    // ---- port A -------------------------------------------------------------------------
    localparam WIDE_A = DATA_WIDTH_A == 36;
    wire [17:0] di_a = {DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0};
    wire [13:0] ad_a = {ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3, ADA2, ADA1, ADA0};
    wire clk_a = (CLKAMUX == "INV") ? ~CLKA : CLKA;
    wire [2:0] cs_a = {CSA2, CSA1, CSA0};
    wire sel_a = CEA && cs_a == cs_decode(CSDECODE_A);
    reg [35:0] latch_a = 36'd0;
    reg [35:0] outreg_a = 36'd0;
    wire [9:0] word_a = WIDE_A ? {ad_a[13:5], 1'b0} : ad_a[13:4];
    reg [35:0] old_a, new_a, read_old_a, read_new_a;
    integer byte_a;
    always @* begin
        if (WIDE_A) begin
            old_a = {mem[word_a | 10'd1], mem[word_a]};
            new_a = old_a;
            for (byte_a = 0; byte_a < 4; byte_a = byte_a + 1)
                if (ad_a[byte_a]) new_a[9 * byte_a +: 9] = di_wide[9 * byte_a +: 9];
            read_old_a = old_a;
            read_new_a = new_a;
        end else begin
            old_a = {18'd0, mem[word_a]};
            new_a = {18'd0, merge(DATA_WIDTH_A, old_a[17:0], di_a, ad_a)};
            read_old_a = {18'd0, extract(DATA_WIDTH_A, old_a[17:0], ad_a)};
            read_new_a = {18'd0, extract(DATA_WIDTH_A, new_a[17:0], ad_a)};
        end
    end
    task automatic step_a;
        begin
            if (OCEA) outreg_a <= latch_a;
            if (sel_a) begin
                if (WEA) begin
                    mem[word_a] <= new_a[17:0];
                    if (WIDE_A) mem[word_a | 10'd1] <= new_a[35:18];
                    if (WRITEMODE_A == "WRITETHROUGH") latch_a <= read_new_a;
                    else if (WRITEMODE_A == "READBEFOREWRITE") latch_a <= read_old_a;
                end else
                    latch_a <= read_old_a;
            end
        end
    endtask
    generate
        if (RESETMODE == "ASYNC") begin : reset_async_a
            always @(posedge clk_a or posedge RSTA)
                if (RSTA) begin
                    latch_a <= 36'd0;
                    outreg_a <= 36'd0;
                end else
                    step_a;
        end else begin : reset_sync_a
            always @(posedge clk_a)
                if (RSTA) begin
                    latch_a <= 36'd0;
                    outreg_a <= 36'd0;
                end else
                    step_a;
        end
    endgenerate
    wire [35:0] out_a = (REGMODE_A == "OUTREG") ? outreg_a : latch_a;

    // ---- port B -------------------------------------------------------------------------
    localparam WIDE_B = DATA_WIDTH_B == 36;
    wire [17:0] di_b = {DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8, DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0};
    wire [13:0] ad_b = {ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3, ADB2, ADB1, ADB0};
    wire clk_b = (CLKBMUX == "INV") ? ~CLKB : CLKB;
    wire [2:0] cs_b = {CSB2, CSB1, CSB0};
    wire sel_b = CEB && cs_b == cs_decode(CSDECODE_B);
    reg [35:0] latch_b = 36'd0;
    reg [35:0] outreg_b = 36'd0;
    wire [9:0] word_b = WIDE_B ? {ad_b[13:5], 1'b0} : ad_b[13:4];
    reg [35:0] old_b, new_b, read_old_b, read_new_b;
    integer byte_b;
    always @* begin
        if (WIDE_B) begin
            old_b = {mem[word_b | 10'd1], mem[word_b]};
            new_b = old_b;
            for (byte_b = 0; byte_b < 4; byte_b = byte_b + 1)
                if (ad_b[byte_b]) new_b[9 * byte_b +: 9] = di_wide[9 * byte_b +: 9];
            read_old_b = old_b;
            read_new_b = new_b;
        end else begin
            old_b = {18'd0, mem[word_b]};
            new_b = {18'd0, merge(DATA_WIDTH_B, old_b[17:0], di_b, ad_b)};
            read_old_b = {18'd0, extract(DATA_WIDTH_B, old_b[17:0], ad_b)};
            read_new_b = {18'd0, extract(DATA_WIDTH_B, new_b[17:0], ad_b)};
        end
    end
    task automatic step_b;
        begin
            if (OCEB) outreg_b <= latch_b;
            if (sel_b) begin
                if (WEB) begin
                    mem[word_b] <= new_b[17:0];
                    if (WIDE_B) mem[word_b | 10'd1] <= new_b[35:18];
                    if (WRITEMODE_B == "WRITETHROUGH") latch_b <= read_new_b;
                    else if (WRITEMODE_B == "READBEFOREWRITE") latch_b <= read_old_b;
                end else
                    latch_b <= read_old_b;
            end
        end
    endtask
    generate
        if (RESETMODE == "ASYNC") begin : reset_async_b
            always @(posedge clk_b or posedge RSTB)
                if (RSTB) begin
                    latch_b <= 36'd0;
                    outreg_b <= 36'd0;
                end else
                    step_b;
        end else begin : reset_sync_b
            always @(posedge clk_b)
                if (RSTB) begin
                    latch_b <= 36'd0;
                    outreg_b <= 36'd0;
                end else
                    step_b;
        end
    endgenerate
    wire [35:0] out_b = (REGMODE_B == "OUTREG") ? outreg_b : latch_b;

    // A wide (36-bit) read on port B comes out on {DOB, DOA}.
    assign {DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6, DOA5, DOA4, DOA3, DOA2, DOA1, DOA0} = WIDE_B ? out_b[17:0] : out_a[17:0];
    assign {DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6, DOB5, DOB4, DOB3, DOB2, DOB1, DOB0} = WIDE_B ? out_b[35:18] : out_b[17:0];

    initial begin
        if (DATA_WIDTH_A != 1 && DATA_WIDTH_A != 2 && DATA_WIDTH_A != 4 && DATA_WIDTH_A != 9 &&
            DATA_WIDTH_A != 18 && DATA_WIDTH_A != 36)
            $fatal(1, "DP16KD %m: DATA_WIDTH_A %0d is none of 1, 2, 4, 9, 18, 36", DATA_WIDTH_A);
        if (DATA_WIDTH_B != 1 && DATA_WIDTH_B != 2 && DATA_WIDTH_B != 4 && DATA_WIDTH_B != 9 &&
            DATA_WIDTH_B != 18 && DATA_WIDTH_B != 36)
            $fatal(1, "DP16KD %m: DATA_WIDTH_B %0d is none of 1, 2, 4, 9, 18, 36", DATA_WIDTH_B);
        if (REGMODE_A != "NOREG" && REGMODE_A != "OUTREG")
            $fatal(1, "DP16KD %m: REGMODE_A %0s is neither NOREG nor OUTREG", REGMODE_A);
        if (REGMODE_B != "NOREG" && REGMODE_B != "OUTREG")
            $fatal(1, "DP16KD %m: REGMODE_B %0s is neither NOREG nor OUTREG", REGMODE_B);
        // In the 36-bit mode Lattice's own primitive (PDPW16KD) has one REGMODE, which
        // nextpnr gives both ports; what the silicon does with two different ones is not
        // documented, so a design that relies on it is refused here.
        if (DATA_WIDTH_B == 36 && REGMODE_A != REGMODE_B)
            $fatal(1, "DP16KD %m: 36-bit read with REGMODE_A %0s != REGMODE_B %0s", REGMODE_A,
                   REGMODE_B);
        if (WRITEMODE_A != "NORMAL" && WRITEMODE_A != "WRITETHROUGH" &&
            WRITEMODE_A != "READBEFOREWRITE")
            $fatal(1, "DP16KD %m: WRITEMODE_A %0s is not modelled", WRITEMODE_A);
        if (WRITEMODE_B != "NORMAL" && WRITEMODE_B != "WRITETHROUGH" &&
            WRITEMODE_B != "READBEFOREWRITE")
            $fatal(1, "DP16KD %m: WRITEMODE_B %0s is not modelled", WRITEMODE_B);
        if (RESETMODE != "SYNC" && RESETMODE != "ASYNC")
            $fatal(1, "DP16KD %m: RESETMODE %0s is neither SYNC nor ASYNC", RESETMODE);
    end
endmodule
