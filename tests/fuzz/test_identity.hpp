// A fixed identity for the fuzz targets and their seeds (made by
// `juice_fuzz_seeds identity`). TEST ONLY: the private key is public.
#pragma once

namespace juice::fuzz {

inline constexpr const char* k_recipient_key_pem =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDHFbIKcZopgq3A\n"
    "kEtpnc1HGEGz/6Auxlm2Pue86MCqRa18UFNJu4B8xfzOGVBP6dV7ClA5WGs8C6op\n"
    "pCl7wnm1txqASV0LGrwQHAG4Wng49YLEGpNKQhZajeHOE5lAxS9IsnojCbzvVdwg\n"
    "2f9eQtHFb+eC66AcKf+bdU+k0/Q//baH5K6ZEHks6OF0N8qF20wKr9zDcvMpsWpF\n"
    "4S2+MT7ss+/p6t8X0gZluybBtRMJ7b0NCmEE92rAsx7qqDcXcgf8KQqv4xJEz9to\n"
    "8/Ee1x0RUi3Sp+EDWmyE5yKYaSUbRM2h57AbMTbV6yFLFFKIHeH71QanBeQfeKr2\n"
    "NY0iHpatAgMBAAECggEAH7eUItfQcLaSCfCzIwNx9dameQ/LrEgLeN5yuwT11Oq+\n"
    "5eRCMKf/o2FDkm4z/ldJnI2bFFfC1dEh7fpqZX4pN8sRHMkTWraKqaJcn8tCBgkP\n"
    "KUD2oEkBGLIr/FHhA5Gmo9VTYgumHxc1t8IjThglJWhboN77JiGGyHSbGK5v5lWz\n"
    "+UzM61WniO7sk6opl//sHTixDurgQUn44KTRGQj1HMXsUe97lU7FLCFIoCvual78\n"
    "oSi9qmBjP6Y6ACbH5yd9sGmxsnJmqloOv5gJYDHhq86juji11OYsYijVW71IlVPU\n"
    "6xfeUk+lGnwUngIx5z16ZtBaSUdteDAahGZadYOU4QKBgQD9d81tGwLuE5v5CVEl\n"
    "QkI1nGFT55VvCi2dO0ErW6nqKUsjG2gdRl7YCZuc3DbTa8sJt8RGeQW1QeYhDkEs\n"
    "lBlQWuwHG3zJP9sNV55GwuaTJZf6I1H6BZgKyv1wh/9R+V7Wt12ZFq4037GFVh4h\n"
    "OkXlndRT0gHyAYV55Q0xfmEu2QKBgQDJEtFliBdtdz6y88uenZGuH+zYW67aTWiI\n"
    "M8yqDCweKq5uUKLv/feelaIIhkX2sQ3cDhyGNJtvz+vrGEhXoETcaQgyrTwPrRaE\n"
    "B5sgtJGIMAdl86JNJVUYSNPDXDvq8xs82GzgwNdEstfTdxAJmPv2q/Qqwx+uv7wn\n"
    "hFNE6fwp9QKBgQC3V2oriodTCLIgsGGWztevib9I/tGzsSwPeGYKY9KDQ31LFq73\n"
    "xggiwshh7VRnF6iVDe0WgMHlO5anwHTaNwIcgrgJ6BMaS2s6um8NhjtcoqvMzrGk\n"
    "ZVl2LSCnvmertvKn45j7fFFkg44YAZPnuwwGLGUCgHzRvdH7uvgRHfZT+QKBgBNf\n"
    "/9NjwLYoll8SBN3c2wvHQcA7XWblrJvrOd5s29dwT2yL0peDhle+nWVq4tT5jJdW\n"
    "uMLp0Mx+YYI+zcG7zMbcTBDuBmqQSCoivXzySU+xKRVW253JaiCz68vYWGG0WTyM\n"
    "sjkZ++Q/w3I5986k8ip7uURhluz0xsGcC5YJYeX9AoGAW0JW8LIc4rYWTx4Zz7YL\n"
    "MIf3uNgl9SqWoRRraQogiUdeHScHkhMJ1/b69KIFh0ERWFgj/XGBLM2t7HrHCYF+\n"
    "bZVXXKYbvuc0wBx+6nGiAS9R5UlTR+0cfICtm7l7GO+9hWnsowTlRYJwwL0aiVxh\n"
    "bve/ZHBdjnI02fmqWQ1gZXQ=\n"
    "-----END PRIVATE KEY-----\n"
    "";

inline constexpr const char* k_recipient_crt_pem =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIC/jCCAeagAwIBAgIQLzbJD+tiUIYkFuG6q+B6mzANBgkqhkiG9w0BAQsFADAZ\n"
    "MRcwFQYDVQQDEw5GdXp6IHJlY2lwaWVudDAeFw0yNjExMjUwODA0MDJaFw0zNjEx\n"
    "MjQwODA0MDJaMBkxFzAVBgNVBAMTDkZ1enogcmVjaXBpZW50MIIBIjANBgkqhkiG\n"
    "9w0BAQEFAAOCAQ8AMIIBCgKCAQEAxxWyCnGaKYKtwJBLaZ3NRxhBs/+gLsZZtj7n\n"
    "vOjAqkWtfFBTSbuAfMX8zhlQT+nVewpQOVhrPAuqKaQpe8J5tbcagEldCxq8EBwB\n"
    "uFp4OPWCxBqTSkIWWo3hzhOZQMUvSLJ6Iwm871XcINn/XkLRxW/nguugHCn/m3VP\n"
    "pNP0P/22h+SumRB5LOjhdDfKhdtMCq/cw3LzKbFqReEtvjE+7LPv6erfF9IGZbsm\n"
    "wbUTCe29DQphBPdqwLMe6qg3F3IH/CkKr+MSRM/baPPxHtcdEVIt0qfhA1pshOci\n"
    "mGklG0TNoeewGzE21eshSxRSiB3h+9UGpwXkH3iq9jWNIh6WrQIDAQABo0IwQDAP\n"
    "BgNVHRMBAf8EBTADAQH/MA4GA1UdDwEB/wQEAwIBhjAdBgNVHQ4EFgQUuuS/2Aby\n"
    "4AYCnaBG+tgz9xqfcR0wDQYJKoZIhvcNAQELBQADggEBABJEQEVkRfKH815QS6b2\n"
    "+sdtoQXF40cKHfh84NI5lbzMxRZfNwjR1Yiu4pDBy7yiOyzKyl6JVaIls9gTqVHv\n"
    "cllhnbkq/KuvPQ09vHvi3wOoxisfRIhelYtL2c+ymRkSrwhdAVLN3LscNsZl0j9g\n"
    "h6Cmhv0r/8/D8QTRjW9gBZ4AsQalh8BJAtTPmn5gjmdY3N1l5Lg8Oelc1KDZm+SD\n"
    "kEKCGZFoyrXb0+8noC4DS/q4I4owkGJ9jY7oPRo5dYUWVK7JGATBGZNn6BSOS6Bg\n"
    "+kD+D4gxFK8ufI6yS+Jn7VNGQzyPD01fP+JciQrEOSS63A2FcgujxTtnPUZK+YjL\n"
    "ZUg=\n"
    "-----END CERTIFICATE-----\n"
    "";

}  // namespace juice::fuzz
