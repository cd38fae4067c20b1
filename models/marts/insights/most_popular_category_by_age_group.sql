with most_popular as (
    {{ most_popular_category_by(ref('int_posts_enriched'), 'age_group') }}
)

select
    age_group,
    category,
    category_count
from most_popular
