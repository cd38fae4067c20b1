with most_popular as (
    {{ most_popular_category_by(ref('int_posts_enriched'), 'country') }}
)

select
    country,
    category,
    category_count
from most_popular
