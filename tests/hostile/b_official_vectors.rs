//! Section B: official vectors and RFC 7662 / 7009 semantics, through the service

use crate::forge::*;
use crate::support::*;

#[tokio::test]
async fn b_official_vectors_through_introspect() {
    let f = Fixture::start().await;
    const A1_P: &str = "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
    const A1_H: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9";
    const ED_INPUT: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
    let hs = "eyJhbGciOiJIUzI1NiJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
    let mut rows = vec![
        row(
            "B1 RFC 7515 A.1 HS256 (valid MAC, expired, HMAC refused)",
            format!("{A1_H}.{A1_P}.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
        ),
        row(
            "B2 RFC 7515 A.2 RS256",
            format!(
                "eyJhbGciOiJSUzI1NiJ9.{A1_P}.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw"
            ),
        ),
        row(
            "B3 RFC 7515 A.3 ES256",
            format!(
                "eyJhbGciOiJFUzI1NiJ9.{A1_P}.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"
            ),
        ),
        row(
            "B4 RFC 7515 A.4 ES512",
            "eyJhbGciOiJFUzUxMiJ9.UGF5bG9hZA.AdwMgeerwtHoh-l192l60hp9wAHZFVJbLfD_UxMi70cwnZOYaRI1bKPWROc-mZZqwqT2SI-KGDKB34XO0aw_7XdtAG8GaSwFKdCAPZgoXD2YBJZCPEX3xKpRwcdOO8KpEHwJjyqOgzDO7iKvU8vcnwNrmxYbSW9ERBXukOXolLzeO_Jn",
        ),
        row(
            "B5 RFC 7515 A.5 unsecured",
            format!("eyJhbGciOiJub25lIn0.{A1_P}."),
        ),
        row(
            "B6 RFC 8037 A.4 EdDSA (foreign key, no kid)",
            format!(
                "{ED_INPUT}.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
            ),
        ),
        row(
            "B12.3 RFC 7515 A.3 with s := n - s",
            format!(
                "eyJhbGciOiJFUzI1NiJ9.{A1_P}.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmU69fgrc8OPGycO0lD3tat_FoFp57SETepkeks4eL_QfA"
            ),
        ),
        row(
            "B12.4 RFC 8037 A.4 with S + L",
            format!(
                "{ED_INPUT}.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6KLa6_pyZkOh9Vg8wkiO1VhVsPt9g7sVvpAr_MuM0KEg"
            ),
        ),
        row(
            "B12.5 RFC 7515 A.3 signature as DER",
            format!("eyJhbGciOiJFUzI1NiJ9.{A1_P}.{RFC7515_A3_DER}"),
        ),
        row(
            "B12.2 psychic DER",
            format!("eyJhbGciOiJFUzI1NiJ9.{A1_P}.{PSYCHIC_DER}"),
        ),
        row(
            "B12.2 psychic P1363 zeros",
            format!("eyJhbGciOiJFUzI1NiJ9.{A1_P}.{}", "A".repeat(86)),
        ),
        row(
            "B12.2 psychic r=s=n",
            format!("eyJhbGciOiJFUzI1NiJ9.{A1_P}.{P256_R_S_N}"),
        ),
        row(
            "B12.7 HS256 keyed with raw x",
            format!("{hs}.QQwDLiq54UNDU3sRHRIjel55pW60FDiRX9Fcr27PK2I"),
        ),
        row(
            "B12.7 HS256 keyed with PEM + \\n",
            format!("{hs}.-KEEupmDOlbn3U_ZNXEeHeuukQSQdg0umzPl_ZmYbZg"),
        ),
        row(
            "B12.7 HS256 keyed with PEM",
            format!("{hs}.WCU3d-Afg4HqExkFGOIiPqLTRoPFHfRVKfS1PkK8qos"),
        ),
        row(
            "B12.7 HS256 keyed with DER SPKI",
            format!("{hs}.IrF8BibZdrJiBLoD6upI6oVytJpliHrO1ViTS387xUg"),
        ),
        row(
            "B12.7 HS256 keyed with the text of x",
            format!("{hs}.9fGCo2KsiFM1MzooGSa647fcFBPqBAvxTIKej_5QaiA"),
        ),
        row(
            "B12.8 HS256 with the empty key",
            format!("{hs}.DmwMbnJABMzFPeP0qUyFKnAc3vyHPqKkShL7uTdls-w"),
        ),
        row(
            "B12.9 HS256 keyed with the A.3 EC PEM",
            format!("eyJhbGciOiJIUzI1NiJ9.{A1_P}.b5WqE1XtY4mvcC8dN0okAZYTHi0BCdK728HRDm4URAg"),
        ),
    ];
    for tail in [
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXl",
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXm",
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXn",
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk=",
        "dBjftJeZ4CVP+mB92K27uhbUJU1p1r/wW1gFWFOEjXk=",
    ] {
        rows.push(row(
            format!("B12.1 RFC 7515 A.1, signature {tail}"),
            format!("{A1_H}.{A1_P}.{tail}"),
        ));
    }
    // The RFC vectors again, each under T0's header (its kid), so the verifier gets as
    // far as it can with them.
    for sig in [
        "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg",
        "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6KLa6_pyZkOh9Vg8wkiO1VhVsPt9g7sVvpAr_MuM0KEg",
    ] {
        rows.push(row(
            format!(
                "B6/B12.4 RFC 8037 signature {}… with T0's header and payload",
                &sig[..8]
            ),
            f.t0.with_sig(sig),
        ));
    }
    // B9.2 unknown / malformed tokens are an ordinary inactive answer.
    rows.push(row(
        "B9.2 unknown but well-formed jti-shaped text",
        b64(random_bytes(16)),
    ));
    rows.push(row("B9.1 control: T0", f.t0.token.clone()).expect(Active));
    f.run("B", rows).await;
}
