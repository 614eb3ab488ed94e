curl -s "${HOST:-localhost:8000}/api/culture/context?date=2026-02-19" -H "Authorization: Bearer $ACCESS"
python manage.py cultural_context --date 2026-02-19 --time 12:00 --org harry-tashkent
python manage.py cultural_context --date 2026-03-20 --lat 39.6542 --lon 66.9597 --tz Asia/Samarkand --country UZ
