# `helm test` check: every URL given must answer 200 within a few tries.
# An https URL is checked as the kubelet's probes check it: whether the service answers,
# not who signed its certificate (that is the clients' CA bundle's job).
import ssl
import sys
import time
import urllib.request

unverified = ssl.create_default_context()
unverified.check_hostname = False
unverified.verify_mode = ssl.CERT_NONE

for url in sys.argv[1:]:
    context = unverified if url.startswith("https://") else None
    for attempt in range(1, 7):
        try:
            with urllib.request.urlopen(url, timeout=5, context=context) as response:
                print(f"{url}: {response.status}")
                break
        except Exception as exc:  # any failure is retried, then reported
            print(f"{url}: attempt {attempt}: {exc}")
            time.sleep(5)
    else:
        sys.exit(f"{url} did not answer 200")
