# `helm test` check: every URL given must answer 200 within a few tries.
import sys
import time
import urllib.request

for url in sys.argv[1:]:
    for attempt in range(1, 7):
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                print(f"{url}: {response.status}")
                break
        except Exception as exc:  # any failure is retried, then reported
            print(f"{url}: attempt {attempt}: {exc}")
            time.sleep(5)
    else:
        sys.exit(f"{url} did not answer 200")
